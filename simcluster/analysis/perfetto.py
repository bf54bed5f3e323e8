"""A run as a Chrome / Perfetto trace (JSON): open it at https://ui.perfetto.dev or in
chrome://tracing.

* one *process* per instance, named by the instance and its devices (``H100-SXM#0: tp=2 pp=1
  [H100-SXM,H100-SXM]``), sorted by device; its TP ranks run each iteration in lockstep, so one
  track of iterations stands for all its devices;
* on it, a track of iterations: one slice per timeline row — an iteration, or a run of
  identical decode steps (``decode x37``) — with batch size, tokens, KV blocks and queue in
  its arguments; counters for sequences in the batch, KV blocks in use and requests waiting;
* a ``KV link`` track on a prefill instance: one slice per KV hand-off, and a flow arrow from
  it to the next iteration of the decode instance that takes the request.

Times are microseconds since the first arrival. Long runs are bounded: only rows starting in
``window_s`` (seconds since the first arrival; default the whole run) are written, and at most
``max_events`` events — when the window holds more, it is cut at the time the budget runs
out. What was written is stated in the trace's ``otherData`` (window, events, whether cut).
"""

from __future__ import annotations

import json
import math
import numbers
from pathlib import Path

import pandas as pd

US = 1e6
EVENTS_PER_ROW = 4          # a slice and three counters


def _slice_name(row) -> str:
    if row.iterations > 1:
        return f"decode x{int(row.iterations)} ({int(row.decode_seqs)} seqs)"
    parts = []
    if row.prefill_seqs:
        parts.append(f"prefill {int(row.prefill_seqs)} ({int(row.prefill_tokens)} tok)")
    if row.decode_seqs:
        parts.append(f"decode {int(row.decode_seqs)}")
    return " + ".join(parts) or "iteration"


def _window(results, window_s, max_events: int):
    """(t0, start, end, rows in the window, cut?) with ``start``/``end`` absolute seconds."""
    if not (hasattr(results, "timeline") and hasattr(results, "instances")):
        raise TypeError(f"results: expected a run's Results (what .run() returns), got "
                        f"{type(results).__name__}")
    tl = results.timeline.sort_values(["start_s", "instance"], kind="stable")
    t0 = float(results.requests.arrival_s.min()) if len(results.requests) else 0.0
    if isinstance(max_events, bool) or not isinstance(max_events, numbers.Integral) \
            or max_events < 1:
        raise ValueError(f"max_events: expected a whole number >= 1, got {max_events!r}")
    if window_s is None:
        lo, hi = 0.0, math.inf
    else:
        if isinstance(window_s, (str, bytes)) or len(window_s) != 2 or not all(
                isinstance(v, numbers.Real) and not isinstance(v, bool) for v in window_s):
            raise ValueError(f"window_s: expected (start, end) in seconds after the first "
                             f"arrival, got {window_s!r}")
        lo, hi = float(window_s[0]), float(window_s[1])
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"window_s must be (start, end) with end > start, got {window_s}")
    rows = tl[(tl.start_s >= t0 + lo) & (tl.start_s < t0 + hi)]
    cap = max(1, max_events // EVENTS_PER_ROW)
    cut = len(rows) > cap
    if cut:
        hi = float(rows.start_s.iloc[cap]) - t0
        rows = rows.iloc[:cap]
    end = min(hi, (float(tl.end_s.max()) - t0) if len(tl) else 0.0)
    return t0, lo, end, rows, cut


def chrome_trace(results, window_s=None, max_events: int = 200_000) -> dict:
    """The trace as a dict (see the module docstring)."""
    t0, lo, hi, rows, cut = _window(results, window_s, max_events)
    inst = results.instances.set_index("instance")
    events = []
    order = sorted(inst.index, key=lambda i: (str(inst.layout[i]).split("[")[-1], i))
    for rank, i in enumerate(order):
        pid = int(i) + 1
        events += [{"ph": "M", "name": "process_name", "pid": pid,
                    "args": {"name": f"{inst.name[i]}: {inst.layout[i]}"}},
                   {"ph": "M", "name": "process_sort_index", "pid": pid,
                    "args": {"sort_index": rank}},
                   {"ph": "M", "name": "thread_name", "pid": pid, "tid": 1,
                    "args": {"name": "iterations"}}]
    for r in rows.itertuples(index=False):
        pid, ts = int(r.instance) + 1, (r.start_s - t0) * US
        args = {"iterations": int(r.iterations), "prefill_seqs": int(r.prefill_seqs),
                "prefill_tokens": int(r.prefill_tokens), "decode_seqs": int(r.decode_seqs),
                "kv_blocks_used": int(r.kv_blocks_used), "waiting": int(r.waiting)}
        events.append({"ph": "X", "name": _slice_name(r), "cat": "iteration", "pid": pid,
                       "tid": 1, "ts": ts, "dur": (r.end_s - r.start_s) * US, "args": args})
        events.append({"ph": "C", "name": "sequences in batch", "pid": pid, "ts": ts,
                       "args": {"sequences": int(r.prefill_seqs + r.decode_seqs)}})
        events.append({"ph": "C", "name": "KV blocks in use", "pid": pid,
                       "ts": (r.end_s - t0) * US, "args": {"blocks": int(r.kv_blocks_used)}})
        events.append({"ph": "C", "name": "requests waiting", "pid": pid,
                       "ts": (r.end_s - t0) * US, "args": {"requests": int(r.waiting)}})
    flows = _transfers(results, t0, lo, hi)
    events += flows
    return {"traceEvents": events, "displayTimeUnit": "ms",
            "otherData": {"simulation": results.name, "time_origin": "first arrival",
                          "window_s": [lo, hi], "timeline_rows": int(len(rows)),
                          "timeline_rows_total": int(len(results.timeline)),
                          "kv_handoffs": sum(1 for e in flows if e["ph"] == "X"),
                          "events": len(events), "cut": bool(cut),
                          "note": (f"cut at {hi:.6g} s: at most {max_events} events"
                                   if cut else "every row in the window")}}


def _transfers(results, t0: float, lo: float, hi: float) -> list[dict]:
    tr = results.transfers
    if not len(tr):
        return []
    dest = results.requests.set_index("request_id").instance
    tr = tr[(tr.start_s >= t0 + lo) & (tr.start_s < t0 + hi)]
    out, named = [], set()
    for k, r in enumerate(tr.itertuples(index=False)):
        src = int(r.src_instance) + 1
        if src not in named:
            named.add(src)
            out.append({"ph": "M", "name": "thread_name", "pid": src, "tid": 2,
                        "args": {"name": "KV link"}})
        ts, te = (r.start_s - t0) * US, (r.end_s - t0) * US
        out.append({"ph": "X", "name": f"KV request {int(r.request_id)}", "cat": "kv",
                    "pid": src, "tid": 2, "ts": ts, "dur": te - ts,
                    "args": {"bytes": float(r.bytes), "request": int(r.request_id)}})
        out.append({"ph": "s", "name": "KV hand-off", "cat": "kv", "id": k, "pid": src,
                    "tid": 2, "ts": ts})
        to = int(r.dst_instance) if r.dst_instance >= 0 else \
            int(dest.get(r.request_id, r.src_instance))
        out.append({"ph": "f", "name": "KV hand-off", "cat": "kv", "id": k, "pid": to + 1,
                    "tid": 1, "ts": te})
    return out


def write_chrome_trace(results, path, window_s=None, max_events: int = 200_000) -> dict:
    """Write :func:`chrome_trace` to ``path``; returns its ``otherData`` (what was written)."""
    trace = chrome_trace(results, window_s, max_events)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(trace, separators=(",", ":")))
    return trace["otherData"]


def tracks(trace: dict) -> pd.DataFrame:
    """The named tracks of a trace (process and thread names), for checking a trace."""
    rows = [{"pid": e["pid"], "tid": e.get("tid"), "kind": e["name"], "name": e["args"]["name"]}
            for e in trace["traceEvents"]
            if e["ph"] == "M" and e["name"] in ("process_name", "thread_name")]
    return pd.DataFrame(rows)
