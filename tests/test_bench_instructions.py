"""The instruction-count benchmark's driver: what it runs and how it refuses (valgrind itself
is not run here: under it one row takes minutes)."""

import contextlib
import importlib.util
import io
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench_ir():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("bench_instructions",
                                                  ROOT / "benchmarks" / "bench_instructions.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    yield mod
    sys.path.remove(str(ROOT / "benchmarks"))


def test_the_counted_run_is_the_second_and_runs_inside_call_tracing(bench_ir, monkeypatch):
    """The counted process runs the row once with cold caches, then once more through
    ``sys.call_tracing`` (callgrind counts only inside it), and reports that run's requests,
    events and finished requests."""
    traced = []

    def call_tracing(fn, args):
        traced.append(fn)
        return fn(*args)
    monkeypatch.setattr(bench_ir.sys, "call_tracing", call_tracing)
    out = bench_ir.worker("syn", {"span_s": 4.0, "count": 1})
    assert out["requests"] == 20 and out["finished"] == 20
    assert out["events"] > 2 * out["requests"]
    assert len(traced) == 1 and traced[0].__name__ == "run"
    bench_ir.floor_worker(10)
    assert len(traced) == 2


def test_the_replayed_run_serves_the_first_runs_replicas(bench_ir, monkeypatch):
    """``--replayed`` counts a run whose router only looks up where the first run sent each
    request: the same replicas, checked."""
    from simcluster.policies import ROUTERS
    monkeypatch.setattr(bench_ir.sys, "call_tracing", lambda fn, args: fn(*args))
    p = {"span_s": 4.0, "count": 2}
    had = "bench-replay" in ROUTERS
    try:
        assert bench_ir.worker("syn", p, True) == bench_ir.worker("syn", p)
    finally:
        if not had:    # (route_cost registered its router: tests that draw routers from the
            ROUTERS.pop("bench-replay", None)              # registry must not meet it)
            sys.modules.pop("route_cost", None)


def test_the_parts_runs_keep_and_ask_the_load_table(bench_ir, monkeypatch):
    """``--parts`` counts the replayed run twice more: with the router's load table kept
    current at the replicas' events, then also asked at each arrival (the replay router
    checks it names the replayed replica); the same replicas. The table prints their
    differences: upkeep over the replayed run, queries over the upkeep run."""
    from simcluster.policies import ROUTERS
    from simcluster.policies.load_index import LoadTable
    monkeypatch.setattr(bench_ir.sys, "call_tracing", lambda fn, args: fn(*args))
    asked, marked = [], []
    real_least, real_mark = LoadTable.least, LoadTable.mark
    monkeypatch.setattr(LoadTable, "least", lambda t, now: asked.append(now) or
                        real_least(t, now))
    monkeypatch.setattr(LoadTable, "mark", lambda t, k, inst: marked.append(k) or
                        real_mark(t, k, inst))
    p = {"span_s": 4.0, "count": 3}
    had = "bench-replay" in ROUTERS
    try:
        plain = bench_ir.worker("syn", p)
        assert bench_ir.worker("syn", p, "upkeep") == plain
        assert marked and not asked
        assert bench_ir.worker("syn", p, "query") == plain
        assert len(asked) > 10
    finally:
        if not had:
            ROUTERS.pop("bench-replay", None)
            sys.modules.pop("route_cost", None)
    counts = {"requests": 10, "events": 40, "finished": 10, "instructions": 3000,
              "floor": 1000, "replayed": 2000, "upkeep": 2400, "query": 2900}
    monkeypatch.setattr(bench_ir, "measure", lambda name, quick, replayed, parts: counts)
    monkeypatch.setattr(bench_ir.shutil, "which", lambda name: "/usr/bin/valgrind")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert bench_ir.main(["--only", "inst-64", "--parts"]) == 0
    head, row = out.getvalue().splitlines()[1:3]
    assert head.split()[-4:] == ["replayed", "routing", "upkeep", "queries"]
    assert row.split()[-4:] == ["0.20", "0.10", "0.04", "0.05"]


def test_the_parts_split_only_rows_whose_router_keeps_a_table(bench_ir, monkeypatch):
    """``--parts`` counts the two table runs only for pools the router routes with a table
    (from ``index_from`` replicas); a smaller row, which the router scans, prints ``-``
    rather than the cost of a table it never builds."""
    from simcluster.policies.routing import LeastOutstandingTokens
    assert bench_ir.TABLE_FROM == LeastOutstandingTokens().index_from == 24
    modes = []

    def count(args):
        if args[0] == "--worker":
            spec = json.loads(args[1])
            modes.append((spec[1].get("count"), spec[2] if len(spec) > 2 else None))
        return 1000, {"requests": 10, "events": 40, "finished": 10}
    monkeypatch.setattr(bench_ir, "_count", count)
    small = bench_ir.measure("inst-16", True, True, True)
    assert "upkeep" not in small and modes == [(16, None), (16, True)]
    modes.clear()
    big = bench_ir.measure("inst-64", True, True, True)
    assert modes == [(64, None), (64, True), (64, "upkeep"), (64, "query")]
    assert big["upkeep"] == big["query"] == 1000
    monkeypatch.setattr(bench_ir, "measure", lambda name, quick, replayed, parts:
                        big if name == "inst-64" else small)
    monkeypatch.setattr(bench_ir.shutil, "which", lambda name: "/usr/bin/valgrind")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert bench_ir.main(["--only", "inst-16", "inst-64", "--parts"]) == 0
    rows = {line.split()[0]: line.split() for line in out.getvalue().splitlines()[2:4]}
    assert rows["inst-16"][-2:] == ["-", "-"]
    assert rows["inst-64"][-2:] == ["0.00", "0.00"]


def test_unknown_and_untimed_rows_are_named(bench_ir, capsys, monkeypatch):
    monkeypatch.setattr(bench_ir.shutil, "which", lambda name: "/usr/bin/valgrind")
    assert bench_ir.main(["--only", "inst-1", "nope", "azure-x1-process", "exp-hllm"]) == 2
    err = capsys.readouterr().err
    assert "['nope', 'azure-x1-process']" in err and "azure-x1" in err and "exp-hllm," in err


def test_experiments_are_counted_as_the_command_line_builds_them(bench_ir, monkeypatch,
                                                                 capsys):
    """A bundled experiment's row counts its own simulation (its model, cost model and
    policies); ``--replayed``, which replays least-outstanding-tokens routing, is refused
    for it."""
    monkeypatch.setattr(bench_ir.sys, "call_tracing", lambda fn, args: fn(*args))
    out = bench_ir.worker("experiment", {"name": "llmshare_h100"})
    assert out["requests"] == 2454 and out["finished"] == 2454
    assert out["events"] > 5 * out["requests"]
    monkeypatch.setattr(bench_ir.shutil, "which", lambda name: "/usr/bin/valgrind")
    assert bench_ir.main(["--only", "exp-hllm", "--replayed"]) == 2
    assert "count them without it" in capsys.readouterr().err


def test_without_valgrind_it_says_so(bench_ir, capsys, monkeypatch):
    monkeypatch.setattr(bench_ir.shutil, "which", lambda name: None)
    assert bench_ir.main(["--only", "inst-1"]) == 2
    assert "valgrind is not on PATH" in capsys.readouterr().err


def test_a_failed_count_shows_the_processes_error(bench_ir, monkeypatch):
    class Done:
        returncode, stdout, stderr = 1, "", "Traceback ...\nValueError: boom"
    monkeypatch.setattr(bench_ir.subprocess, "run", lambda *a, **k: Done())
    with pytest.raises(RuntimeError, match="boom"):
        bench_ir._count(["--floor", "10"])


def test_route_cost_parts_replay_with_the_load_table_kept_and_asked(bench_ir):
    """``route_cost --parts``: the replayed run keeping a load table current serves the same
    requests, and asking the table at each arrival names the replayed replica (checked in
    the run: a wrong replayed choice is caught)."""
    from simcluster.policies import ROUTERS
    had = "bench-replay" in ROUTERS
    try:
        import route_cost
        r = route_cost.measure("inst-4", 1, True, parts=True)
        assert r["requests"] == 4000 and {"upkeep", "query"} <= set(r)
        with pytest.raises(ValueError, match="table"):
            route_cost.Replay([], table="both")
        kind, p, _ = route_cost.bench.ROWS["inst-4"]
        p = {**p, "span_s": 20.0}
        from simcluster.calibration import load_calibration
        from simcluster.cost import CostModel
        cost, cache = CostModel(load_calibration("measured")), {}
        choices = route_cost.bench._build(kind, p, cost, cache).run().requests.instance
        wrong = [(c + 1) % 4 for c in choices.tolist()]
        sim = route_cost.bench._build(kind, p, cost, cache, "bench-replay",
                                      {"choices": wrong, "table": "query"})
        with pytest.raises(RuntimeError, match="load table chose another replica"):
            sim.run()
    finally:
        if not had:
            ROUTERS.pop("bench-replay", None)
            sys.modules.pop("route_cost", None)
