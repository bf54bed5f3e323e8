"""``python -m engine_profile`` (from simcluster/harness): profile and replay the engine.

    probe    --out DIR [--trace CSV --burst N --rate R]  small sweep, a burst, a short replay
    profile  --out DIR [--sweep serving,grid] [--budgets 2048,8192] [--profile-budget-s S]
    replay   --out DIR --trace CSV --rate R --name NAME [--max-requests N]
    all      --out DIR [--trace CSV --burst N] --replay NAME:RATE:N[:CSV] ... (profile, replays)
    forward  --out DIR                                   whole-model eager forward passes

Model shape and engine settings for every command: ``--model llama-2-7b|llama-3-8b|tiny`` or
``--hf-config config.json``; ``--num-blocks``, ``--block-size``, ``--max-batch-tokens``,
``--max-requests-per-batch``; ``--cuda-graphs`` (with ``--q-padding``, ``--kv-padding``).
``--max-context`` (default: the model's) sizes the sweeps' longest contexts to the workload;
``--budgets`` profiles several token budgets in one process (the manager is restarted per
budget; the model stays). RATE "x0.5" = half the burst's throughput; N "s90" = the requests of
90 s. Every file is written as soon as its phase ends (the profile after every group), so a run
stopped at a time limit still leaves what it measured.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

from .hf_cb import (ITERATION_COLUMNS, REQUEST_COLUMNS, EngineSettings, IterationLog,
                    Submission, build_model, metadata, read_requests, rescale, run_requests,
                    shape_from_hf_config, start_manager, write_csv)
from .sweeps import serving_sweep, sweep


def _summary(rows, label):
    import numpy as np
    if not rows:
        print(f"  {label}: no iterations", flush=True)
        return
    t = np.array([r["iteration_s"] for r in rows])
    cap = sum(int(r.get("graph_capture") or 0) for r in rows)
    print(f"  {label}: {len(rows)} iterations, median {1e3 * np.median(t):.1f} ms, "
          f"p90 {1e3 * np.percentile(t, 90):.1f} ms, total {t.sum():.1f} s"
          + (f", {cap} graph captures" if cap else ""), flush=True)


def _warmup(manager, log, settings):
    big = min(2048, settings.max_batch_tokens)
    subs = ([Submission(0.0, 512, 8) for _ in range(4)] + [Submission(0.0, big, 2)]
            + [Submission(0.0, 16, 8) for _ in range(64)])
    run_requests(manager, log, subs, "warmup", seed=99)


def _tag(settings) -> str:
    return f"{settings.model_name}-{settings.regime}-b{settings.max_batch_tokens}"


def _profile(manager, log, settings, out, budget_s, quick, meta, kind, max_context):
    path = os.path.join(out, f"profile-{kind}-{_tag(settings)}.csv")
    t0, rows = time.perf_counter(), []
    maker = sweep if kind == "grid" else serving_sweep
    groups = maker(settings, quick=quick, max_context=max_context)
    meta = {**meta, "sweep": kind, "max_context": max_context}
    for g in groups:
        if time.perf_counter() - t0 > budget_s:
            print(f"  profile budget {budget_s:.0f}s reached; stopping before {g.name}",
                  flush=True)
            break
        run_requests(manager, log, list(g.subs), g.name, deadline_s=120)
        got = log.take(g.name)
        rows += got
        _summary(got, g.name)
        write_csv(path, rows, ITERATION_COLUMNS, {**meta, "kind": "synthetic profile"})
    print(f"profile: {len(rows)} iterations in {time.perf_counter() - t0:.0f}s -> {path}",
          flush=True)
    return rows


def _replay(manager, log, out, trace, rate, n, name, meta, deadline_s):
    subs = rescale(read_requests(trace), rate, n)
    span = subs[-1].arrival_s if subs else 0.0
    print(f"replay {name}: {len(subs)} requests over {span:.1f}s "
          f"({rate} req/s), from {trace}", flush=True)
    t0 = time.perf_counter()
    rows = run_requests(manager, log, subs, f"replay-{name}", seed=7, deadline_s=deadline_s)
    its = log.take(f"replay-{name}")
    m = {**meta, "kind": f"trace replay {name}", "trace": os.path.basename(trace),
         "rate_per_s": rate, "requests": len(subs), "arrival_span_s": f"{span:.3f}",
         "wall_s": f"{time.perf_counter() - t0:.1f}"}
    write_csv(os.path.join(out, f"replay-{name}.csv"), rows, REQUEST_COLUMNS, m)
    write_csv(os.path.join(out, f"replay-{name}-iterations.csv"), its, ITERATION_COLUMNS, m)
    import numpy as np
    ttft = np.array([r["ttft_s"] for r in rows], dtype=float)
    tpot = np.array([r["tpot_s"] for r in rows], dtype=float)
    e2e = np.array([r["e2e_s"] for r in rows], dtype=float)
    print(f"  {name}: finished {np.isfinite(e2e).sum()}/{len(rows)}, "
          f"resets {sum(r['soft_resets'] for r in rows)}, "
          f"TTFT p50 {np.nanmedian(ttft):.3f}s p90 {np.nanpercentile(ttft, 90):.3f}s; "
          f"TPOT p50 {1e3 * np.nanmedian(tpot):.1f}ms; E2E p50 {np.nanmedian(e2e):.2f}s",
          flush=True)
    _summary(its, f"replay-{name} iterations")
    return rows


def _burst(manager, log, out, trace, n, meta):
    """The first ``n`` requests of the slice all at once: the engine's capacity (req/s)."""
    subs = [Submission(0.0, s.prompt_tokens, s.output_tokens) for s in read_requests(trace)[:n]]
    t = time.perf_counter()
    rows = run_requests(manager, log, subs, "replay-burst", deadline_s=150)
    done = [r["finish_s"] for r in rows if r["finish_s"] == r["finish_s"]]
    wall = max(done) if done else float("nan")
    m = {**meta, "kind": "trace replay burst (all requests at t=0)",
         "trace": os.path.basename(trace), "rate_per_s": "inf", "requests": len(subs),
         "arrival_span_s": "0", "wall_s": f"{time.perf_counter() - t:.1f}"}
    write_csv(os.path.join(out, "replay-burst.csv"), rows, REQUEST_COLUMNS, m)
    write_csv(os.path.join(out, "replay-burst-iterations.csv"), log.take("replay-burst"),
              ITERATION_COLUMNS, m)
    capacity = len(done) / wall if done else 2.0
    print(f"burst: {len(subs)} requests done in {wall:.1f}s = {capacity:.2f} req/s", flush=True)
    return capacity


def settings_from_args(a) -> EngineSettings:
    engine = {k: v for k, v in (("num_blocks", a.num_blocks), ("block_size", a.block_size),
                                ("max_batch_tokens", a.max_batch_tokens),
                                ("max_requests_per_batch", a.max_requests_per_batch),
                                ("q_padding_interval_size", a.q_padding),
                                ("kv_padding_interval_size", a.kv_padding)) if v is not None}
    if a.cuda_graphs:
        engine["use_cuda_graph"] = True
    if a.hf_config:
        shape = shape_from_hf_config(a.hf_config)
        return EngineSettings(**{**shape, "model_name": os.path.basename(
            os.path.dirname(os.path.abspath(a.hf_config))) or "hf-config", **engine})
    s = EngineSettings.for_model(a.model, **engine)
    if a.model == "tiny" and a.num_blocks is None:
        s = dataclasses.replace(s, block_size=32, num_blocks=512, max_batch_tokens=256,
                                max_requests_per_batch=32)
    return s


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="engine_profile", description=__doc__.split("\n\n")[0])
    p.add_argument("cmd", choices=["probe", "profile", "replay", "all", "forward"])
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--model", default="llama-2-7b", help="llama-2-7b, llama-3-8b or tiny")
    p.add_argument("--hf-config", help="a Llama-architecture config.json (overrides --model)")
    p.add_argument("--tiny", action="store_true", help="same as --model tiny (CPU tests)")
    for flag in ("num-blocks", "block-size", "max-batch-tokens", "max-requests-per-batch",
                 "q-padding", "kv-padding", "max-context", "max-requests", "burst"):
        p.add_argument(f"--{flag}", type=int, default=None if flag != "burst" else 0)
    p.add_argument("--cuda-graphs", action="store_true", help="CUDA graphs on (varlen path)")
    p.add_argument("--budgets", help="profile: token budgets to sweep, e.g. 2048,8192")
    p.add_argument("--trace", help="trace slice CSV: arrival_s, prompt_tokens, output_tokens")
    p.add_argument("--rate", type=float, help="replay: rescale arrivals to this rate")
    p.add_argument("--name", default="replay")
    p.add_argument("--replay", action="append", default=[],
                   help="all: NAME:RATE:N[:TRACE_CSV] (repeatable)")
    p.add_argument("--profile-budget-s", type=float, default=240.0)
    p.add_argument("--replay-deadline-s", type=float, default=240.0)
    p.add_argument("--total-budget-s", type=float, default=560.0,
                   help="all: replays get what is left of this, shared out")
    p.add_argument("--quick", action="store_true", help="a small sweep (smoke test)")
    p.add_argument("--sweep", default="serving", help="profile sweeps: serving, grid")
    return p


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    if a.tiny:
        a.model = "tiny"
    os.makedirs(a.out, exist_ok=True)
    settings = settings_from_args(a)
    t0 = time.perf_counter()
    if a.cmd == "forward":
        from .forward import run_forward
        run_forward(settings.model_name, a.out, a.device, a.quick)
        print(f"total {time.perf_counter() - t0:.1f}s", flush=True)
        return 0
    max_ctx = a.max_context or settings.max_position_embeddings
    model = build_model(settings, a.device)
    log = IterationLog()
    manager = start_manager(model, settings, log)
    meta = metadata(settings, {"t0_unix": f"{log.t0_unix:.3f}"})
    print(f"engine up in {time.perf_counter() - t0:.1f}s: {meta['device_name']}, "
          f"{meta['engine_version']}, {settings.model_name} {settings.regime}", flush=True)
    try:
        _warmup(manager, log, settings)
        _summary(log.take("warmup"), "warmup")
        if not log.take("warmup"):
            raise SystemExit("the engine ran no iteration in the warm-up: see its log above")
        if a.cmd in ("probe", "profile", "all") and a.profile_budget_s > 0:
            budgets = [int(b) for b in a.budgets.split(",")] if a.budgets else [None]
            final = settings.max_batch_tokens
            per = (min(60.0, a.profile_budget_s) if a.cmd == "probe" else a.profile_budget_s) / len(budgets)
            for b in budgets:
                if b is not None and b != settings.max_batch_tokens:
                    manager.stop(block=True, timeout=10)
                    settings = dataclasses.replace(settings, max_batch_tokens=b)
                    manager = start_manager(model, settings, log)
                    _warmup(manager, log, settings)
                meta = metadata(settings, {"t0_unix": f"{log.t0_unix:.3f}"})
                for kind in a.sweep.split(","):
                    _profile(manager, log, settings, a.out, per / len(a.sweep.split(",")),
                             a.quick or a.cmd == "probe", meta, kind, max_ctx)
            if a.budgets and settings.max_batch_tokens != final:
                manager.stop(block=True, timeout=10)
                settings = dataclasses.replace(settings, max_batch_tokens=final)
                manager = start_manager(model, settings, log)
                _warmup(manager, log, settings)
                meta = metadata(settings, {"t0_unix": f"{log.t0_unix:.3f}"})
        capacity = None
        if a.cmd in ("probe", "all") and a.trace and a.burst:
            capacity = _burst(manager, log, a.out, a.trace, a.burst, meta)
        if a.cmd in ("probe", "replay") and a.trace and a.rate:
            n = a.max_requests or (30 if a.cmd == "probe" else None)
            _replay(manager, log, a.out, a.trace, a.rate, n, a.name, meta, a.replay_deadline_s)
        if a.cmd == "all":
            for k, spec in enumerate(a.replay):
                name, rate, n, *trace = spec.split(":")
                rate = (float(rate[1:]) * (capacity or 2.0) if rate.startswith("x")
                        else float(rate))
                n = int(round(float(n[1:]) * rate)) + 1 if n.startswith("s") else int(n)
                left = a.total_budget_s - (time.perf_counter() - t0)
                deadline = left / (len(a.replay) - k) if k < len(a.replay) - 1 else left - 10
                _replay(manager, log, a.out, trace[0] if trace else a.trace, round(rate, 3), n,
                        name, meta, max(deadline, 10.0))
    finally:
        manager.stop(block=True, timeout=10, hard_stop=True)
    print(f"total {time.perf_counter() - t0:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
