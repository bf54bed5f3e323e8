"""The Chrome/Perfetto trace: loads as JSON, a track per instance named by its devices,
iterations as slices, KV hand-offs as flows, bounded on long runs."""

import json
import re

import pytest

from simcluster.analysis.perfetto import chrome_trace, tracks, write_chrome_trace
from simcluster.cli import main
from simcluster.experiment import load_experiment


def test_tracks_slices_and_flows_of_a_disaggregated_run(tmp_path):
    res = load_experiment("hllm_azure_conv.toml", {"trace.window_s": [0, 60]}).run()
    info = write_chrome_trace(res, tmp_path / "t.json")
    trace = json.loads((tmp_path / "t.json").read_text())
    t = tracks(trace)
    procs = t[t.kind == "process_name"]
    assert len(procs) == len(res.instances) == 13
    assert procs.name.str.contains(r"\[A100-80GB-PCIe\]").sum() == 1
    assert procs.name.str.contains(r"\[Xeon-Gold-6148\]").sum() == 12
    assert set(t[t.kind == "thread_name"].name) == {"iterations", "KV link"}
    ev = trace["traceEvents"]
    slices = [e for e in ev if e["ph"] == "X" and e["cat"] == "iteration"]
    assert len(slices) == len(res.timeline) == info["timeline_rows"]
    assert all(e["dur"] > 0 and "decode_seqs" in e["args"] for e in slices)
    starts = [e for e in ev if e["ph"] == "s"]
    ends = [e for e in ev if e["ph"] == "f"]
    assert len(starts) == len(ends) == len(res.transfers) == info["kv_handoffs"] > 0
    dest = dict(zip(res.requests.request_id, res.requests.instance))
    kv = [e for e in ev if e["ph"] == "X" and e["cat"] == "kv"]
    for s, f, k in zip(starts, ends, kv):
        assert s["id"] == f["id"] and s["pid"] == 1 == k["pid"]
        assert f["pid"] == dest[k["args"]["request"]] + 1 != 1     # the decoding socket
        assert f["ts"] == k["ts"] + k["dur"]
    assert not info["cut"] and info["window_s"][0] == 0


def test_long_runs_are_cut_and_say_so():
    res = load_experiment("default.toml", {"trace.first_n": 400}).run()
    full = chrome_trace(res)
    cut = chrome_trace(res, max_events=400)
    assert not full["otherData"]["cut"] and cut["otherData"]["cut"]
    assert cut["otherData"]["timeline_rows"] == 100 < len(res.timeline)
    assert "cut at" in cut["otherData"]["note"]
    assert len([e for e in cut["traceEvents"] if e["ph"] == "X"]) == 100
    win = chrome_trace(res, window_s=(10, 20))
    ts = [e["ts"] for e in win["traceEvents"] if e["ph"] == "X"]
    assert ts and min(ts) >= 10e6 and max(ts) < 20e6
    # max_events 0 or -3 wrote one row as if asked; a window as text failed in float()
    for kw, says in [({"max_events": 0}, "max_events: expected a whole number >= 1"),
                     ({"max_events": -3}, "max_events: expected a whole number >= 1"),
                     ({"window_s": "0,5"}, "window_s: expected (start, end)"),
                     ({"window_s": (0, float("nan"))}, "end > start"),
                     ({"window_s": (5, 1)}, "end > start")]:
        with pytest.raises(ValueError, match=re.escape(says)):
            chrome_trace(res, **kw)


def test_cli_writes_the_trace(tmp_path, capsys):
    out = tmp_path / "run.json"
    assert main(["run", "--quiet", "--set", "trace.first_n=50", "--timeline-out", str(out),
                 "--timeline-window", "0,5"]) == 0
    assert "ui.perfetto.dev" in capsys.readouterr().out
    assert json.loads(out.read_text())["otherData"]["window_s"][0] == 0
    with pytest.raises(SystemExit) as err:
        main(["run", "--quiet", "--timeline-out", str(out), "--timeline-window", "5,1"])
    assert err.value.code == 2
    assert "--timeline-window: expected END > START" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["run", "--quiet", "--timeline-out", str(out), "--timeline-window", "nan,5"])
    assert "expected finite START,END" in capsys.readouterr().err
