"""Results as DataFrames, and summaries as pure functions of those frames.

* ``requests``: one row per request — times, tokens, instance, device, preemptions, the
  reason if it was rejected, ``cached_tokens`` (prompt tokens its admission found in the
  replica's prefix cache: they skipped prefill), and its KV hand-off's times and bytes.
* ``timeline``: one row per instance event — a single iteration, or a run of identical decode
  iterations (``iterations`` > 1) — with batch composition (``prefill_done``: prompts that
  finished and sampled their first token), KV blocks in use and requests waiting as the row
  was written (when its iterations ended), what
  attention read (``prefill_context``: cached tokens before the prompt chunks;
  ``prefill_pairs``: their causal (query, key) pairs; ``decode_context``: KV tokens the decode
  sequences attend at the row's first step) and the model work that follows (``flops``,
  ``bytes``; :mod:`.work`).
* ``instances``: one row per replica — its devices, KV capacity, price, peak FLOP/s and memory
  bandwidth, and the power of its devices idle, prefilling and decoding (:mod:`.energy`).
* ``transfers``: one row per KV hand-off between instances — request, source and destination
  instance, start, end and bytes on the link (``dst_instance`` -1 where the pool's router
  placed it later).
* ``activity``: one row per change of an instance's active state by a controller.

:func:`summarize` is a pure function of the frames, built from *groups* of fields
(:data:`SUMMARY_GROUPS`): adding a group is adding one function to that list.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from simcluster.errors import InputError
from simcluster.lazy import lazy_module
from simcluster.serving.rowlog import release_memory
from simcluster.simulation.energy import energy_summary

pd = lazy_module("pandas")     # (imported when a frame is first built)

REQUEST_COLUMNS = ["request_id", "arrival_s", "prompt_tokens", "output_tokens", "instance",
                   "device", "prefill_start_s", "first_token_s", "finish_s", "queueing_s",
                   "ttft_s", "tpot_s", "e2e_s", "preemptions", "rejected", "reason",
                   "cached_tokens", "handoff_start_s", "handoff_end_s", "handoff_bytes"]
TIMELINE_COLUMNS = ["instance", "start_s", "end_s", "iterations", "prefill_seqs",
                    "prefill_tokens", "prefill_done", "decode_seqs", "kv_blocks_used",
                    "waiting", "prefill_context", "prefill_pairs", "decode_context"]
TRANSFER_COLUMNS = ["request_id", "src_instance", "start_s", "end_s", "bytes", "dst_instance"]
ACTIVITY_COLUMNS = ["time_s", "instance", "active"]


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
    return _derived(df)


def request_frame_from_columns(cols: dict, prompt_tokens, output_tokens,
                               devices) -> pd.DataFrame:
    """:func:`request_frame` from recorded columns indexed by request id (``cols`` as
    :meth:`~.records.RequestLog.columns` gives them; ``devices[i]``: instance i's device)."""
    inst = cols.pop("instance").astype(np.int64)
    names = np.array([""] + list(devices), dtype=object)
    reason = cols.pop("reason")
    output = np.asarray(output_tokens, dtype=np.int64)
    arrival, start = cols.pop("arrival_s"), cols.pop("prefill_start_s")
    first, finish = cols.pop("first_token_s"), cols.pop("finish_s")
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = (finish - first) / np.where(output > 1, output - 1, np.nan)
    data = {"request_id": cols.pop("request_id"), "arrival_s": arrival,
            "prompt_tokens": np.asarray(prompt_tokens, dtype=np.int64),
            "output_tokens": output, "instance": inst, "device": names[inst + 1],
            "prefill_start_s": start, "first_token_s": first, "finish_s": finish,
            "queueing_s": start - arrival, "ttft_s": first - arrival, "tpot_s": tpot,
            "e2e_s": finish - arrival, "preemptions": cols.pop("preemptions").astype(np.int64),
            "rejected": reason != "", "reason": reason,
            "cached_tokens": cols.pop("cached_tokens"),
            "handoff_start_s": cols.pop("handoff_start_s"),
            "handoff_end_s": cols.pop("handoff_end_s"), "handoff_bytes": cols.pop("handoff_bytes")}
    return pd.DataFrame(data, columns=REQUEST_COLUMNS, copy=False)


def with_trace_columns(requests: pd.DataFrame, trace) -> pd.DataFrame:
    """``requests`` (rows by request id) with the trace's single-valued extra columns after
    its own (:meth:`~simcluster.workload.Trace.scalar_extras`: the source file's request ids,
    a tenant, ...), so that each request's results keep what the trace said of it; a name
    that a result column has already is prefixed ``trace.``."""
    for name, values in trace.scalar_extras().items():
        requests[f"trace.{name}" if name in requests else name] = values
    return requests


def _derived(df: pd.DataFrame) -> pd.DataFrame:
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


def timeline_frame_from_columns(cols: dict) -> pd.DataFrame:
    """The timeline frame from recorded columns (integer columns as int64)."""
    return pd.DataFrame({k: (cols[k] if cols[k].dtype.kind == "f" else
                             cols[k].astype(np.int64)) for k in TIMELINE_COLUMNS},
                        copy=False)


def timeline_frame_from_logs(logs) -> pd.DataFrame:
    """The timeline frame of replicas' row logs (:class:`~simcluster.serving.rowlog.RowLog`,
    in order): their rows move into the frame's columns (integers as int64), each record
    chunk freed once copied (the memory handed back once, at the end), and the logs read
    their rows from the frame from then on."""
    n = sum(len(log) - log.streamed for log in logs)
    if not logs:
        return timeline_frame([])
    kinds = {name: logs[0].record[name].kind for name in TIMELINE_COLUMNS}
    out = {k: np.empty(n, dtype=np.float64 if kinds[k] == "f" else np.int64)
           for k in TIMELINE_COLUMNS}
    pos = 0
    for log in logs:
        pos += log.move_into(out, pos)
    release_memory()
    return pd.DataFrame(out, copy=False)


def _pct(series: pd.Series, q: float) -> float:
    s = series.dropna()
    return float(np.percentile(s, q)) if len(s) else math.nan


@dataclass(frozen=True)
class _Frames:
    """The frames a summary reads, and the times every group shares."""

    requests: pd.DataFrame
    timeline: pd.DataFrame
    instances: pd.DataFrame
    ttft_slo_s: float | None
    tpot_slo_s: float | None
    prefix_caching: bool = False

    @property
    def done(self) -> pd.DataFrame:
        return self.requests[~self.requests.rejected]

    @property
    def start(self) -> float:
        return float(self.requests.arrival_s.min()) if len(self.requests) else 0.0

    @property
    def last_arrival(self) -> float:
        return float(self.requests.arrival_s.max()) if len(self.requests) else 0.0

    @property
    def end(self) -> float:
        done = self.done
        return float(np.nanmax(done.finish_s)) if len(done) else self.start

    @property
    def span(self) -> float:
        return max(self.end - self.start, 1e-12)

    @property
    def window(self) -> float:
        """Seconds from the first arrival to the last: the time the load was offered."""
        return self.last_arrival - self.start


def _counts(f: _Frames) -> dict:
    return {"requests": int(len(f.requests)), "finished": int(len(f.done)),
            "rejected": int(f.requests.rejected.sum()), "span_s": f.end - f.start,
            "preemptions": int(f.requests.preemptions.sum())}


def _latency(f: _Frames) -> dict:
    out, done = {}, f.done
    for col in ("ttft_s", "tpot_s", "e2e_s", "queueing_s"):
        for q in (50, 90, 99):
            out[f"{col[:-2]}_p{q}_s"] = _pct(done[col], q)
        out[f"{col[:-2]}_mean_s"] = float(done[col].mean()) if len(done) else math.nan
    return out


def _in_window(f: _Frames) -> tuple[float, np.ndarray]:
    """(window seconds, fraction of each timeline row inside the arrival window)."""
    w, tl = f.window, f.timeline
    if w <= 0 or not len(tl):
        return w, np.zeros(len(tl))
    dur = (tl.end_s - tl.start_s).to_numpy(float)
    inside = np.clip(f.last_arrival - tl.start_s.to_numpy(float), 0.0, dur)
    return w, np.divide(inside, dur, out=np.ones_like(dur), where=dur > 0)


def _throughput(f: _Frames) -> dict:
    """Offered rate and throughput over the arrival window, drain time after it.

    The arrival window is first to last arrival (the offered rate is requests per second of
    it, as :attr:`Trace.rate_per_s`); throughput counts requests finished and tokens
    processed inside it, so an overloaded cluster reads its capacity, not the offered rate,
    and a drain after the last arrival does not dilute it. ``drain_s`` is the time from the
    last arrival to the last finish. Work still in flight when the window closes is not
    counted, nor is the first requests' time to finish: on a trace not much longer than its
    end-to-end latencies, throughput reads low by roughly latency / window, whatever the load.
    """
    w, frac = _in_window(f)
    tl = f.timeline
    done_in = f.done.finish_s <= f.last_arrival
    out_tokens = float((frac * (tl.prefill_done + tl.iterations * tl.decode_seqs)).sum())
    prompt_tokens = float((frac * tl.prefill_tokens).sum())
    per_s = (lambda x: x / w) if w > 0 else (lambda x: math.nan)
    return {"offered_rate_per_s": per_s(len(f.requests)), "arrival_window_s": w,
            "drain_s": max(f.end - f.last_arrival, 0.0),
            "request_throughput_per_s": per_s(float(done_in.sum())),
            "output_token_throughput_per_s": per_s(out_tokens),
            "token_throughput_per_s": per_s(out_tokens + prompt_tokens)}


def _slo(f: _Frames) -> dict:
    """Share of all requests (rejected ones fail) meeting every SLO given, and goodput: those
    finished inside the arrival window, per second of it."""
    if f.ttft_slo_s is None and f.tpot_slo_s is None:
        return {}
    req, out = f.requests, {}
    ok = ~req.rejected
    if f.ttft_slo_s is not None:
        out["ttft_slo_s"] = f.ttft_slo_s
        ok &= req.ttft_s <= f.ttft_slo_s
    if f.tpot_slo_s is not None:
        out["tpot_slo_s"] = f.tpot_slo_s
        ok &= req.tpot_s.fillna(0.0) <= f.tpot_slo_s
    out["slo_attainment"] = float(ok.mean()) if len(req) else math.nan
    good = float((ok & (req.finish_s <= f.last_arrival)).sum())
    out["goodput_per_s"] = good / f.window if f.window > 0 else math.nan
    return out


def _cost(f: _Frames) -> dict:
    """Every device of every replica is charged for the whole span (first arrival to last
    finish); cost per million tokens divides that by the prompt and output tokens served."""
    done = f.done
    out_tokens = int(done.output_tokens.sum())
    all_tokens = out_tokens + int(done.prompt_tokens.sum())
    hours = f.span / 3600.0
    per_hour = float(f.instances.price_usd_per_hour.sum())
    usd = per_hour * hours
    return {"device_hours": float(f.instances.num_devices.sum()) * hours,
            "cost_usd_per_hour": per_hour, "cost_usd": usd,
            "cost_per_m_tokens_usd": usd / all_tokens * 1e6 if all_tokens else math.nan,
            "cost_per_m_output_tokens_usd": usd / out_tokens * 1e6 if out_tokens else math.nan}


#: The columns :func:`utilisation` adds to an instance (``Results.save`` writes them beside the
#: instances' own in instances.csv; ``Results.load`` leaves them out and recomputes them).
UTILISATION_COLUMNS = ["nonidle_fraction", "flops", "bytes", "achieved_flops_per_s",
                       "achieved_bytes_per_s", "mfu", "mbu"]


def utilisation(timeline: pd.DataFrame, instances: pd.DataFrame, span_s: float) -> pd.DataFrame:
    """Per instance over ``span_s``: model FLOPs and bytes, achieved FLOP/s and bytes/s, MFU
    and MBU (achieved over the devices' summed peaks), and ``nonidle_fraction`` — the share
    of the span with an iteration in flight, of any size (not a utilisation: a batch of one
    keeps it at 1)."""
    span_s = max(span_s, 1e-12)
    ids = instances.instance
    g = timeline.groupby("instance")
    sums = pd.DataFrame({"flops": g.flops.sum() if "flops" in timeline else 0.0,
                         "bytes": g.bytes.sum() if "bytes" in timeline else 0.0,
                         "busy_s": (timeline.end_s - timeline.start_s).groupby(
                             timeline.instance).sum()}).reindex(ids, fill_value=0.0)
    out = pd.DataFrame({"instance": ids.to_numpy(), "name": instances.name.to_numpy()})
    out["nonidle_fraction"] = sums.busy_s.to_numpy() / span_s
    out["flops"] = sums.flops.to_numpy(float)
    out["bytes"] = sums.bytes.to_numpy(float)
    out["achieved_flops_per_s"] = out.flops / span_s
    out["achieved_bytes_per_s"] = out.bytes / span_s
    for col, peak in (("mfu", "peak_flops_per_s"), ("mbu", "peak_mem_bw_bytes_per_s")):
        have = instances[peak].to_numpy(float) if peak in instances else np.nan
        achieved = out[f"achieved_{'flops' if col == 'mfu' else 'bytes'}_per_s"]
        out[col] = achieved.to_numpy() / have
    return out


def _utilisation(f: _Frames) -> dict:
    if not len(f.timeline) or not len(f.instances):
        return {}
    u = utilisation(f.timeline, f.instances, f.span)
    return {"nonidle_fraction_mean": float(u.nonidle_fraction.mean()),
            "mfu_mean": float(u.mfu.mean()), "mbu_mean": float(u.mbu.mean())}


def _energy(f: _Frames) -> dict:
    """Energy of the devices over the span (:mod:`.energy`); none without power columns."""
    done = f.done
    tokens = int(done.output_tokens.sum()) + int(done.prompt_tokens.sum())
    return energy_summary(f.timeline, f.instances, f.span, len(done), tokens)


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


def _prefix_cache(f: _Frames) -> dict:
    """With prefix caching (the trace had block hashes and the replicas cache)."""
    return prefix_cache_summary(f.done) if f.prefix_caching else {}


#: The summary's groups of fields, in order: (name, function of the frames -> dict).
SUMMARY_GROUPS: list[tuple[str, Callable[[_Frames], dict]]] = [
    ("counts", _counts), ("latency", _latency), ("throughput", _throughput), ("slo", _slo),
    ("cost", _cost), ("utilisation", _utilisation), ("energy", _energy),
    ("prefix_cache", _prefix_cache)]


def summarize(requests: pd.DataFrame, timeline: pd.DataFrame, instances: pd.DataFrame,
              ttft_slo_s: float | None = None, tpot_slo_s: float | None = None,
              prefix_caching: bool = False) -> dict:
    """Counts, latency percentiles, offered rate and throughput, SLO attainment and goodput,
    cost, utilisation, energy and (with ``prefix_caching``) prefix-cache hits: every group of
    :data:`SUMMARY_GROUPS`, merged in order."""
    f = _Frames(requests, timeline, instances, ttft_slo_s, tpot_slo_s, prefix_caching)
    out: dict = {}
    for _, group in SUMMARY_GROUPS:
        out.update(group(f))
    return out


def instance_busy(timeline: pd.DataFrame, span_s: float) -> pd.Series:
    """Non-idle fraction per instance over ``span_s``: time spent in iterations / span."""
    return (timeline.end_s - timeline.start_s).groupby(timeline.instance).sum() / span_s


def rejections(requests: pd.DataFrame) -> pd.DataFrame:
    """Rejected requests per kind of reason — a reason's text before its first ``": "``
    (``max_batched_tokens``, ``kv_capacity``, ``max_model_len``, ``instance OOM``; the whole
    text where it has none) —, the commonest first: columns ``kind``, ``requests`` and
    ``example`` (the first rejected request's reason of that kind). Empty when none was."""
    why = requests.reason[requests.rejected]
    kind = why.str.split(": ", n=1).str[0]
    out = pd.DataFrame({"kind": kind, "example": why}).groupby("kind", sort=False).agg(
        requests=("example", "size"), example=("example", "first")).reset_index()
    return out.sort_values("requests", ascending=False, kind="stable", ignore_index=True)


def rejected_because(requests: pd.DataFrame) -> str:
    """The rejections of a run in one line, for a table of runs: the commonest kind with an
    example, and how many of other kinds (``'405 x max_batched_tokens (e.g. ...); and 3 of
    1 other kind'``); '' when none was rejected."""
    kinds = rejections(requests)
    if not len(kinds):
        return ""
    top = kinds.iloc[0]
    rest = int(kinds.requests.iloc[1:].sum())
    others = len(kinds) - 1
    more = f"; and {rest} of {others} other kind{'s' if others > 1 else ''}" if rest else ""
    return f"{top.requests} x {top.kind} (e.g. {top.example}){more}"


def failure(requests: pd.DataFrame) -> str:
    """Why a run served nothing (every request rejected: the commonest reasons), or ''."""
    if not len(requests) or not requests.rejected.all():
        return ""
    reasons = requests.reason.value_counts()
    top = "; ".join(f"{n} x {why}" for why, n in reasons.head(3).items())
    more = f" (and {len(reasons) - 3} other reasons)" if len(reasons) > 3 else ""
    return f"every request was rejected ({len(requests)}): {top}{more}"


def _jsonable(v):
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, np.generic):
        return _jsonable(v.item())
    return v


@dataclass
class Results:
    """What one simulation produced: the frames, the SLOs to summarise against, and the cost
    model's provenance (calibration, engine, and where each device's rates come from)."""

    requests: pd.DataFrame
    timeline: pd.DataFrame
    instances: pd.DataFrame
    ttft_slo_s: float | None = None
    tpot_slo_s: float | None = None
    name: str = ""
    prefix_caching: bool = False
    transfers: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(
        columns=TRANSFER_COLUMNS))
    activity: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(
        columns=ACTIVITY_COLUMNS))
    provenance: dict = field(default_factory=dict)
    envelope: dict = field(default_factory=dict)   # engine envelope counters per instance

    def __repr__(self) -> str:
        """A line for a notebook's cell or a prompt (the frames are attributes)."""
        r = self.requests
        rejected = int(r.rejected.sum()) if "rejected" in r else 0
        span = (float(r.finish_s.max() - r.arrival_s.min())
                if len(r) and "finish_s" in r and r.finish_s.notna().any() else 0.0)
        return (f"<Results{f' {self.name!r}' if self.name else ''}: {len(r)} requests "
                f"({len(r) - rejected} served, {rejected} rejected) on {len(self.instances)} "
                f"instances over {span:.4g} s; .summary(), .requests, .timeline, .instances>")

    def summary(self) -> dict:
        return summarize(self.requests, self.timeline, self.instances, self.ttft_slo_s,
                         self.tpot_slo_s, self.prefix_caching)

    def utilisation(self) -> pd.DataFrame:
        """Per-instance MFU, MBU and non-idle fraction over the run's span (:func:`utilisation`)."""
        f = _Frames(self.requests, self.timeline, self.instances, None, None)
        return utilisation(self.timeline, self.instances, f.span)

    def failure(self) -> str:
        """Why the run served nothing, or '' (:func:`failure`)."""
        return failure(self.requests)

    def rejected_because(self) -> str:
        """The rejections in one line, or '' (:func:`rejected_because`)."""
        return rejected_because(self.requests)

    def rejections(self) -> pd.DataFrame:
        """Rejected requests per kind of reason, the commonest first (:func:`rejections`)."""
        return rejections(self.requests)

    @classmethod
    def load(cls, directory) -> "Results":
        """The Results that :meth:`save` (or ``simcluster run --out DIR``) wrote into
        ``directory``: the same frames, SLOs, name and provenance, so that its summary,
        figures (``sc.plots``) and analyses are the run's. An InputError names a file that is
        missing or is not what save writes."""
        d = Path(directory)
        if not d.is_dir():
            raise InputError("expected a folder that Results.save or 'simcluster run --out' "
                             "wrote", file=str(d))
        need = ("requests.csv", "timeline.csv", "instances.csv", "summary.json")
        missing = [n for n in need if not (d / n).is_file()]
        if missing:
            raise InputError(f"no {', '.join(missing)} here; expected the files Results.save "
                             f"writes ({', '.join(need)}, and transfers.csv or activity.csv "
                             "when the run had them)", file=str(d))
        try:
            body = json.loads((d / "summary.json").read_text())
        except ValueError as err:
            raise InputError(f"not valid JSON: {err}", file=str(d / "summary.json")) from None
        if not isinstance(body, dict):
            raise InputError("expected the JSON object Results.save writes",
                             file=str(d / "summary.json"))

        def frame(name, columns, optional=False, dtype=None):
            path = d / f"{name}.csv"
            if optional and not path.is_file():
                return pd.DataFrame(columns=columns)
            try:
                df = pd.read_csv(path, dtype=dtype)
            except (ValueError, pd.errors.ParserError) as err:
                raise InputError(f"not a CSV that Results.save writes: {err}",
                                 file=str(path)) from None
            absent = [c for c in columns if c not in df]
            if absent:
                raise InputError(f"missing column(s) {', '.join(absent)}; expected the "
                                 f"columns Results.save writes", file=str(path))
            return df
        requests = frame("requests", REQUEST_COLUMNS, dtype={"reason": "str"})
        requests["reason"] = requests.reason.fillna("")     # ('' was written as an empty cell)
        instances = frame("instances", ["instance", "name", "num_devices"])
        instances = instances.drop(columns=[c for c in UTILISATION_COLUMNS if c in instances])
        return cls(requests, frame("timeline", TIMELINE_COLUMNS), instances,
                   ttft_slo_s=body.get("ttft_slo_s"), tpot_slo_s=body.get("tpot_slo_s"),
                   name=body.get("name") or "",
                   prefix_caching="prefix_hit_rate" in body,
                   transfers=frame("transfers", TRANSFER_COLUMNS, optional=True),
                   activity=frame("activity", ACTIVITY_COLUMNS, optional=True),
                   provenance=body.get("provenance") or {})

    def save(self, directory) -> Path:
        """Write requests.csv, timeline.csv, instances.csv (with utilisation), transfers.csv
        and activity.csv (when not empty), and summary.json (with provenance) into
        ``directory`` (made if missing). A transfers.csv or activity.csv an earlier run left
        there, where this run has none, is removed: the folder holds one run."""
        d = Path(directory)
        if d.exists() and not d.is_dir():
            raise NotADirectoryError(f"{str(d)!r} is a file; Results.save writes a folder of "
                                     "CSVs and summary.json: give a folder's path")
        d.mkdir(parents=True, exist_ok=True)
        self.requests.to_csv(d / "requests.csv", index=False)
        self.timeline.to_csv(d / "timeline.csv", index=False)
        util = self.utilisation().drop(columns=["name"])
        self.instances.merge(util, on="instance").to_csv(d / "instances.csv", index=False)
        for name in ("transfers", "activity"):
            frame = getattr(self, name)
            if frame is not None and len(frame):
                frame.to_csv(d / f"{name}.csv", index=False)
            else:
                (d / f"{name}.csv").unlink(missing_ok=True)
        summary = {k: _jsonable(v) for k, v in self.summary().items()}
        body = {"name": self.name, "provenance": self.provenance, **summary}
        (d / "summary.json").write_text(json.dumps(body, indent=2))
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


def format_provenance(provenance: dict) -> str:
    """The cost model in words: calibration, engine model, each device's calibration source."""
    if not provenance:
        return "cost model: (unknown)"
    lines = [f"cost model: calibration {provenance.get('calibration')}, engine model "
             f"{provenance.get('engine') or 'none (kernel time only)'}"]
    for dev, how in provenance.get("devices", {}).items():
        lines.append(f"  {dev}: {how}")
    for dev, path in provenance.get("specs", {}).items():
        lines.append(f"  {dev}: spec {path} (SIMCLUSTER_HWSPECS)")
    return "\n".join(lines)


def format_utilisation(util: pd.DataFrame, max_rows: int = 16) -> str:
    """Per-instance utilisation as a short table (the first ``max_rows`` instances)."""
    cols = {"name": "instance", "nonidle_fraction": "non-idle", "achieved_flops_per_s":
            "TFLOP/s", "mfu": "MFU", "achieved_bytes_per_s": "GB/s", "mbu": "MBU"}
    t = util[list(cols)].rename(columns=cols).copy()
    t["TFLOP/s"] = t["TFLOP/s"] / 1e12
    t["GB/s"] = t["GB/s"] / 1e9
    text = t.head(max_rows).to_string(index=False, float_format=lambda v: f"{v:.3g}")
    if len(t) > max_rows:
        text += f"\n... ({len(t) - max_rows} more instances in instances.csv)"
    return text
