"""Summary statistics of a trace, as a flat dict and as an aligned plain-text table.

``describe`` is what ``simcluster trace-info FILE`` prints (through
``format_description``); the dict form is for notebooks and for comparing traces
(``pd.DataFrame([describe(a), describe(b)])``).
"""

from __future__ import annotations

import math

import numpy as np

from simcluster.workload.trace import Trace

_QUANTILES = (("p50", 50), ("p90", 90), ("p99", 99))


def _token_stats(prefix: str, values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        keys = ["mean", *(q for q, _ in _QUANTILES), "max"]
        return {f"{prefix}_{k}": math.nan for k in keys}
    stats = {f"{prefix}_mean": float(values.mean())}
    for key, q in _QUANTILES:
        stats[f"{prefix}_{key}"] = float(np.percentile(values, q))
    stats[f"{prefix}_max"] = int(values.max())
    return stats


def interarrival_cv(trace: Trace) -> float:
    """Coefficient of variation (sample std / mean) of the gaps between arrivals.

    1 for Poisson arrivals, below 1 for smoother and above 1 for burstier traffic. NaN with
    fewer than three requests or when all requests arrive at once.
    """
    gaps = np.diff(trace.arrival_s)
    if len(gaps) < 2 or gaps.mean() == 0:
        return math.nan
    return float(gaps.std(ddof=1) / gaps.mean())


def describe(trace: Trace) -> dict[str, object]:
    """Headline numbers of a trace as a flat dict.

    Keys: name, requests, span_s, rate_per_s, prompt_tokens_{mean,p50,p90,p99,max},
    output_tokens_{mean,p50,p90,p99,max}, interarrival_cv, and extras (names of the extra
    per-request columns). Percentiles interpolate linearly between requests.
    """
    if not isinstance(trace, Trace):
        raise TypeError(f"trace: expected a Trace (load_trace, synthetic_trace), got "
                        f"{type(trace).__name__}")
    d: dict[str, object] = {
        "name": trace.name,
        "requests": len(trace),
        "span_s": trace.span_s,
        "rate_per_s": trace.rate_per_s,
    }
    d.update(_token_stats("prompt_tokens", trace.prompt_tokens))
    d.update(_token_stats("output_tokens", trace.output_tokens))
    d["interarrival_cv"] = interarrival_cv(trace)
    d["extras"] = list(trace.extras)
    return d


def _fmt(value: object) -> str:
    if isinstance(value, (bool, np.bool_)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return "n/a"
        return f"{value:,.3f}" if abs(value) < 1e15 else f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) if value else "-"
    return str(value) if value != "" else "-"


def format_description(d: dict[str, object]) -> str:
    """An aligned two-column table of a :func:`describe` dict, one statistic per line.

    Token statistics are grouped in one row per statistic with prompt and output side by
    side; numbers are right-aligned.
    """
    lines: list[tuple[str, str, str]] = []
    for key in ("name", "requests", "span_s", "rate_per_s", "interarrival_cv"):
        if key in d:
            lines.append((key, _fmt(d[key]), ""))
    stats = [k.removeprefix("prompt_tokens_") for k in d if k.startswith("prompt_tokens_")]
    if stats:
        lines.append(("tokens", "prompt", "output"))
        for stat in stats:
            lines.append((f"  {stat}", _fmt(d.get(f"prompt_tokens_{stat}", "")),
                          _fmt(d.get(f"output_tokens_{stat}", ""))))
    known = {"name", "requests", "span_s", "rate_per_s", "interarrival_cv"}
    for key, value in d.items():
        if key not in known and not key.startswith(("prompt_tokens_", "output_tokens_")):
            lines.append((key, _fmt(value), ""))
    w0 = max(len(a) for a, _, _ in lines)
    w1 = max(len(b) for _, b, _ in lines)
    w2 = max(len(c) for _, _, c in lines)
    out = []
    for a, b, c in lines:
        row = f"{a:<{w0}}  {b:>{w1}}" + (f"  {c:>{w2}}" if w2 else "")
        out.append(row.rstrip())
    return "\n".join(out)
