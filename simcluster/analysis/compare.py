"""Side-by-side comparison of runs: one column per run, metrics grouped latency / throughput /
SLO / cost / energy (/ prefix cache, where runs cache prefixes), latencies in milliseconds.

:func:`compare_table` takes a frame with one row per run (a sweep's frame, or summaries) and
returns a frame indexed by run label whose columns are ``(group, metric)``;
:func:`format_compare` prints it transposed (metrics down, runs across) under group headings;
:func:`flat` names the columns ``group.metric`` for CSV and Parquet.
"""

from __future__ import annotations

import math

import pandas as pd

# group -> (summary key, column name, scale): latencies become milliseconds
GROUPS: dict[str, list[tuple[str, str, float]]] = {
    "latency": [(f"{m}_p{q}_s", f"{m}_p{q}_ms", 1e3) for m in ("ttft", "tpot", "e2e")
                for q in (50, 90, 99)] + [("queueing_p90_s", "queueing_p90_ms", 1e3)],
    "throughput": [("offered_rate_per_s", "offered_req_per_s", 1.0),
                   ("request_throughput_per_s", "req_per_s", 1.0),
                   ("output_token_throughput_per_s", "output_tok_per_s", 1.0),
                   ("drain_s", "drain_s", 1.0), ("mfu_mean", "mfu", 1.0),
                   ("mbu_mean", "mbu", 1.0), ("nonidle_fraction_mean", "nonidle", 1.0)],
    "slo": [("slo_attainment", "attainment", 1.0), ("goodput_per_s", "goodput_req_per_s", 1.0),
            ("rejected", "rejected", 1.0)],
    "cost": [("cost_usd_per_hour", "usd_per_hour", 1.0),
             ("cost_per_m_tokens_usd", "usd_per_m_tokens", 1.0),
             ("cost_per_m_output_tokens_usd", "usd_per_m_output_tokens", 1.0),
             ("device_hours", "device_hours", 1.0)],
    "energy": [("energy_kwh", "kwh", 1.0), ("energy_per_request_j", "j_per_request", 1.0),
               ("energy_per_m_tokens_kwh", "kwh_per_m_tokens", 1.0)],
    # (only where a run's replicas cache prefixes and its trace has block hashes)
    "prefix_cache": [("prefix_hit_rate", "hit_rate", 1.0),
                     ("prefix_request_hit_fraction", "requests_hit", 1.0),
                     ("ttft_hit_p50_s", "ttft_hit_p50_ms", 1e3),
                     ("ttft_miss_p50_s", "ttft_miss_p50_ms", 1e3)],
}


def compare_table(frame: pd.DataFrame, label: str = "label") -> pd.DataFrame:
    """Runs (rows of ``frame``, named by its ``label`` column) x grouped metrics."""
    labels = frame[label].astype(str) if label in frame else frame.index.astype(str)
    cols = {}
    for group, metrics in GROUPS.items():
        for key, name, scale in metrics:
            if key in frame:
                cols[(group, name)] = pd.to_numeric(frame[key], errors="coerce").to_numpy() \
                    * scale
    out = pd.DataFrame(cols, index=pd.Index(labels.to_list(), name="run"))
    out.columns = pd.MultiIndex.from_tuples(out.columns, names=["group", "metric"])
    if "error" in frame:
        errors = frame["error"].fillna("").astype(str).to_numpy()
        if any(errors):
            out[("status", "error")] = errors
    return out


def flat(table: pd.DataFrame) -> pd.DataFrame:
    """The table with ``group.metric`` column names and the run label as a column."""
    out = table.copy()
    out.columns = [f"{g}.{m}" for g, m in table.columns]
    return out.reset_index()


def _fmt(v) -> str:
    if isinstance(v, str):
        return v
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.4g}"


def error_kind(error: str) -> str:
    """A run's status cell: ``ok``, or its error's class name (``UnknownNameError: ...`` ->
    that; a message is too long for a table's column)."""
    if not error:
        return "ok"
    head = error.split(":", 1)[0]
    return head if head.isidentifier() else "failed"


def format_compare(table: pd.DataFrame, errors: bool = True) -> str:
    """Metrics down, runs across, a heading per group; where runs failed, the status row
    names each error's kind and the messages follow under ``[errors]`` (a message is too
    long for a column; ``errors=False``: not, for a caller that reports them itself)."""
    runs = [str(r) for r in table.index]
    width = max(len(m) for _, m in table.columns) + 2
    kinds = ([error_kind(e) for e in table[("status", "error")]]
             if ("status", "error") in table else [])
    cw = max(10, *(len(r) + 2 for r in runs), *(len(k) + 2 for k in kinds))
    lines = [f"{'':<{width}}" + "".join(f"{r:>{cw}}" for r in runs)]
    failed = {}
    for group in dict.fromkeys(g for g, _ in table.columns):
        lines.append(f"[{group}]")
        for g, m in table.columns:
            if g != group:
                continue
            cells = table[(g, m)]
            if (g, m) == ("status", "error"):
                failed = {r: e for r, e in zip(runs, cells) if e}
                cells = kinds
            lines.append(f"  {m:<{width - 2}}" + "".join(f"{_fmt(v):>{cw}}" for v in cells))
    if failed and errors:
        lines.append("[errors]")
        lines += [f"  {r}: {e}" for r, e in failed.items()]
    return "\n".join(lines)
