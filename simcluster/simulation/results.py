"""Results as DataFrames, and summaries as pure functions of those frames.

* ``requests``: one row per request — times, tokens, instance, device, preemptions, the
  reason if it was rejected, and ``cached_tokens`` (prompt tokens its admission found in the
  replica's prefix cache: they skipped prefill).
* ``timeline``: one row per instance event — a single iteration, or a run of identical decode
  iterations (``iterations`` > 1) — with batch composition (``prefill_done``: prompts that
  finished and sampled their first token), KV blocks in use at its start and queue length.
* ``instances``: one row per replica — its devices, KV capacity, price, and the power of its
  devices idle, prefilling and decoding (:mod:`.energy`; the summary's ``energy_*`` fields).
* ``transfers``: one row per KV hand-off between instances — request, source and destination
  instance, start, end and bytes on the link (``dst_instance`` -1 where the pool's router
  placed it later).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from simcluster.simulation.energy import energy_summary

REQUEST_COLUMNS = ["request_id", "arrival_s", "prompt_tokens", "output_tokens", "instance",
                   "device", "prefill_start_s", "first_token_s", "finish_s", "queueing_s",
                   "ttft_s", "tpot_s", "e2e_s", "preemptions", "rejected", "reason",
                   "cached_tokens", "handoff_start_s", "handoff_end_s", "handoff_bytes"]
TRANSFER_COLUMNS = ["request_id", "src_instance", "start_s", "end_s", "bytes", "dst_instance"]
TIMELINE_COLUMNS = ["instance", "start_s", "end_s", "iterations", "prefill_seqs",
                    "prefill_tokens", "prefill_done", "decode_seqs", "kv_blocks_used",
                    "waiting"]


def request_frame(requests) -> pd.DataFrame:
    rows = [(r.id, r.arrival_s, r.prompt_tokens, r.output_tokens, r.instance, r.device,
             r.prefill_start_s, r.first_token_s, r.finish_s, r.preemptions, bool(r.reason),
             r.reason, r.cached_tokens, r.handoff_start_s, r.handoff_end_s, r.handoff_bytes)
            for r in requests]
    df = pd.DataFrame(rows, columns=["request_id", "arrival_s", "prompt_tokens",
                                     "output_tokens", "instance", "device", "prefill_start_s",
                                     "first_token_s", "finish_s", "preemptions", "rejected",
                                     "reason", "cached_tokens", "handoff_start_s",
                                     "handoff_end_s", "handoff_bytes"])
    df = df.sort_values("request_id", kind="stable").reset_index(drop=True)
    df["queueing_s"] = df.prefill_start_s - df.arrival_s
    df["ttft_s"] = df.first_token_s - df.arrival_s
    decode_tokens = (df.output_tokens - 1).where(df.output_tokens > 1)
    df["tpot_s"] = (df.finish_s - df.first_token_s) / decode_tokens
    df["e2e_s"] = df.finish_s - df.arrival_s
    return df[REQUEST_COLUMNS]


def timeline_frame(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=TIMELINE_COLUMNS)


def transfer_frame(rows) -> pd.DataFrame:
    """KV hand-offs: tuples ``(request, src, start_s, end_s, bytes[, dst])``."""
    full = [tuple(r) + (-1,) * (len(TRANSFER_COLUMNS) - len(r)) for r in rows]
    return pd.DataFrame(full, columns=TRANSFER_COLUMNS)


def _pct(series: pd.Series, q: float) -> float:
    s = series.dropna()
    return float(np.percentile(s, q)) if len(s) else math.nan


def summarize(requests: pd.DataFrame, timeline: pd.DataFrame, instances: pd.DataFrame,
              ttft_slo_s: float | None = None, tpot_slo_s: float | None = None,
              prefix_caching: bool = False) -> dict:
    """Latency percentiles, throughput, SLO attainment, goodput, device-hours and cost.

    The span is first arrival to last finish. A rejected request counts against SLO
    attainment. Device-hours charge every device of every replica for the whole span;
    cost per million tokens divides that cost by prompt plus output tokens served. With
    ``prefix_caching`` (the trace had block hashes and the replicas cache), the
    :func:`prefix_cache_summary` keys follow.
    """
    done = requests[~requests.rejected]
    start = float(requests.arrival_s.min()) if len(requests) else 0.0
    end = float(np.nanmax(done.finish_s)) if len(done) else start
    span = max(end - start, 1e-12)
    out: dict = {"requests": int(len(requests)), "finished": int(len(done)),
                 "rejected": int(requests.rejected.sum()), "span_s": end - start}
    for col in ("ttft_s", "tpot_s", "e2e_s", "queueing_s"):
        for q in (50, 90, 99):
            out[f"{col[:-2]}_p{q}_s"] = _pct(done[col], q)
        out[f"{col[:-2]}_mean_s"] = float(done[col].mean()) if len(done) else math.nan
    out_tokens = int(done.output_tokens.sum())
    all_tokens = out_tokens + int(done.prompt_tokens.sum())
    out["request_throughput_per_s"] = len(done) / span
    out["output_token_throughput_per_s"] = out_tokens / span
    out["token_throughput_per_s"] = all_tokens / span
    out["preemptions"] = int(requests.preemptions.sum())
    if ttft_slo_s is not None or tpot_slo_s is not None:
        ok = ~requests.rejected
        if ttft_slo_s is not None:
            out["ttft_slo_s"] = ttft_slo_s
            ok &= requests.ttft_s <= ttft_slo_s
        if tpot_slo_s is not None:
            out["tpot_slo_s"] = tpot_slo_s
            ok &= requests.tpot_s.fillna(0.0) <= tpot_slo_s
        out["slo_attainment"] = float(ok.mean()) if len(requests) else math.nan
        out["goodput_per_s"] = float(ok.sum()) / span
    hours = span / 3600.0
    out["device_hours"] = float(instances.num_devices.sum()) * hours
    out["cost_usd"] = float(instances.price_usd_per_hour.sum()) * hours
    out["cost_per_m_tokens_usd"] = out["cost_usd"] / all_tokens * 1e6 if all_tokens else math.nan
    out["cost_per_m_output_tokens_usd"] = (out["cost_usd"] / out_tokens * 1e6
                                           if out_tokens else math.nan)
    if len(timeline):
        busy = instance_busy(timeline, span)
        out["busy_fraction_mean"] = float(busy.reindex(instances.instance, fill_value=0).mean())
    out.update(energy_summary(timeline, instances, span, len(done), all_tokens))
    if prefix_caching:
        out.update(prefix_cache_summary(done))
    return out


def prefix_cache_summary(done: pd.DataFrame) -> dict:
    """Prefix-cache metrics of the finished requests: cached prompt tokens (prefill saved),
    token hit rate (cached / prompt tokens), the fraction of requests that hit, and TTFT
    percentiles of the requests that hit and of those that did not."""
    cached = int(done.cached_tokens.sum())
    prompt = int(done.prompt_tokens.sum())
    hit = done.cached_tokens > 0
    out = {"prefix_cached_tokens": cached,
           "prefix_hit_rate": cached / prompt if prompt else math.nan,
           "prefix_request_hit_fraction": float(hit.mean()) if len(done) else math.nan}
    for name, sel in (("hit", hit), ("miss", ~hit)):
        for q in (50, 90):
            out[f"ttft_{name}_p{q}_s"] = _pct(done.ttft_s[sel], q)
    return out


def instance_busy(timeline: pd.DataFrame, span_s: float) -> pd.Series:
    """Busy fraction per instance over ``span_s``: time spent in iterations / span."""
    return (timeline.end_s - timeline.start_s).groupby(timeline.instance).sum() / span_s


@dataclass
class Results:
    """What one simulation produced: the three frames, and the SLOs to summarise against."""

    requests: pd.DataFrame
    timeline: pd.DataFrame
    instances: pd.DataFrame
    ttft_slo_s: float | None = None
    tpot_slo_s: float | None = None
    name: str = ""
    prefix_caching: bool = False
    transfers: pd.DataFrame | None = None

    def summary(self) -> dict:
        return summarize(self.requests, self.timeline, self.instances, self.ttft_slo_s,
                         self.tpot_slo_s, self.prefix_caching)

    def save(self, directory) -> Path:
        """Write requests.csv, timeline.csv, instances.csv, summary.json (and transfers.csv
        where instances handed KV off) into ``directory``."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.requests.to_csv(d / "requests.csv", index=False)
        if self.transfers is not None and len(self.transfers):
            self.transfers.to_csv(d / "transfers.csv", index=False)
        self.timeline.to_csv(d / "timeline.csv", index=False)
        self.instances.to_csv(d / "instances.csv", index=False)
        summary = {k: (None if isinstance(v, float) and math.isnan(v) else v)
                   for k, v in self.summary().items()}
        (d / "summary.json").write_text(json.dumps({"name": self.name, **summary}, indent=2))
        return d


def format_summary(summary: dict) -> str:
    """A two-column plain-text table of a summary."""
    width = max(len(k) for k in summary)
    lines = []
    for k, v in summary.items():
        if isinstance(v, float):
            v = f"{v:.6g}"
        lines.append(f"{k:<{width}}  {v}")
    return "\n".join(lines)
