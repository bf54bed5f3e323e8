"""Figures of runs and searches: each function returns a matplotlib ``Figure``.

Figures are built without pyplot (no global state: nothing accumulates in a long script) as
:class:`PlotFigure`, a ``matplotlib.figure.Figure`` that Jupyter displays inline as a PNG when it
is a cell's value, whatever the backend. :func:`save` writes PNGs.

===========================  ==================================================================
one run or a few             :func:`latency_cdf`, :func:`instance_timeline` (batch size, KV use,
                             non-idle time, resampled), :func:`queue_lengths`,
                             :func:`active_instances` (a controller's active CPU sockets)
a sweep's frame              :func:`latency_percentiles`, :func:`slo_attainment`,
                             :func:`throughput_latency`, :func:`cost_per_m_tokens`
a search                     :func:`capacity_curve`, :func:`cheapest_candidates`
===========================  ==================================================================

Timelines are resampled into ``bins`` time bins (time-weighted means), so a 19k-request run
draws a few hundred points per line whatever its length.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

_LATENCY = {"ttft_s": "TTFT", "tpot_s": "TPOT", "e2e_s": "end-to-end latency",
            "queueing_s": "queueing delay"}


def _runs(results) -> dict:
    """A Results, or a mapping label -> Results, as a dict (TypeError for anything else: a
    run's request frame, or a sweep's, given where its Results goes)."""
    if isinstance(results, Mapping):
        runs = dict(results)
    else:
        runs = {getattr(results, "name", "") or "run": results}
    for label, res in runs.items():
        if not (hasattr(res, "requests") and hasattr(res, "timeline")):
            raise TypeError(
                f"expected a run's Results (what .run() returns) or a mapping label -> Results, "
                f"got {type(res).__name__}" + (f" for {label!r}" if len(runs) > 1 else "")
                + "; a sweep's or comparison's frame goes to latency_percentiles, "
                "slo_attainment, throughput_latency or cost_per_m_tokens")
    return runs


def _one(results):
    """One run's Results (TypeError for a mapping of runs, or anything else)."""
    if isinstance(results, Mapping):
        raise TypeError("this figure shows one run: give its Results, not a mapping of runs "
                        "(latency_cdf takes several)")
    _runs(results)
    return results


class PlotFigure(Figure):
    """A Figure that displays itself in Jupyter (as PNG) without pyplot or a magic."""

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.savefig(buf, format="png", dpi=90)
        return buf.getvalue()


def _frame(frame) -> None:
    """``frame`` is a sweep's or comparison's frame with rows (TypeError; ValueError: an
    empty figure would say nothing)."""
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"expected a sweep's or comparison's frame (a DataFrame: .frame of "
                        f"what sweep or compare return), got {type(frame).__name__}; a run's "
                        f"Results go to latency_cdf, instance_timeline or run_figures")
    if not len(frame):
        raise ValueError("the frame has no rows: nothing to draw")


def _need(frame: pd.DataFrame, what: str = "the frame", **columns) -> None:
    """Each keyword's column is in ``frame``: a ValueError naming the argument, with the
    closest column, otherwise (pandas' KeyError named only the missing column)."""
    from simcluster.errors import did_you_mean
    for arg, col in columns.items():
        if col is not None and col not in frame:
            hint = did_you_mean(col, [str(c) for c in frame.columns])
            if not hint and "point" in frame:         # a sweep's frame: name what it varied
                varied = [str(c) for c in frame.columns[:frame.columns.get_loc("point")]]
                hint = f"; the keys it varies: {', '.join(varied) or 'none'}"
            raise ValueError(f"{arg}={col!r}: not a column of {what}{hint}")


def _plain_log(axis, ratio: float = 10.0):
    """Log-axis labels as plain numbers, no minor labels; 1-2-5 steps on ranges spanning
    less than ``ratio`` 100 (max / min), powers of ten on wider ones."""
    subs = (1.0, 2.0, 5.0) if ratio < 100 else (1.0,)
    axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_major_formatter(ScalarFormatter())
    axis.set_minor_formatter(NullFormatter())


def _latency_scale(ax, values):
    """Log scale with plain labels when latencies span a decade or more, else linear."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    if len(v) and v.max() / v.min() >= 8:
        ax.set_yscale("log")
        _plain_log(ax.yaxis, v.max() / v.min())


def _fig(nrows=1, ncols=1, w=6.4, h=3.6, **kw):
    fig = PlotFigure(figsize=(w * ncols if ncols > 1 else w, h * nrows if nrows > 1 else h),
                     layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False, **kw)


def latency_cdf(results, metrics=("ttft_s", "tpot_s", "e2e_s")) -> Figure:
    """Empirical CDFs of per-request latencies (ms, log scale), one line per run, SLOs
    dashed."""
    runs = _runs(results)
    for res in runs.values():
        for metric in metrics:
            _need(res.requests, "the run's requests", metrics=metric)
    fig, axes = _fig(1, len(metrics), w=4.2, h=3.4)
    for ax, metric in zip(axes[0], metrics):
        ratio = 1.0
        for i, (label, res) in enumerate(runs.items()):
            v = np.sort(res.requests[metric].dropna().to_numpy() * 1e3)
            v = v[v > 0]
            if len(v):
                ax.plot(v, np.arange(1, len(v) + 1) / len(v), color=f"C{i}", label=str(label))
                ratio = max(ratio, v[-1] / v[0])
        slo = getattr(next(iter(runs.values())), f"{metric[:-2]}_slo_s", None)
        if slo:
            ax.axvline(slo * 1e3, color="k", ls="--", lw=0.8,
                       label=f"{_LATENCY.get(metric, metric)} SLO {slo * 1e3:g} ms")
        ax.set(xscale="log", xlabel=f"{_LATENCY.get(metric, metric)} (ms)",
               ylabel="fraction of requests", ylim=(0, 1.01))
        _plain_log(ax.xaxis, ratio)
        ax.grid(alpha=0.3)
    # below the panels, not over the first one's curves (a comparison of six variants with
    # labels like 'router.policy=round_robin, instances.0.count=2' covered its whole CDF)
    legend = {}
    for ax in axes[0]:
        legend.update(zip(*reversed(ax.get_legend_handles_labels())))
    fig.legend(list(legend.values()), list(legend), loc="outside lower center",
               ncol=min(3, len(legend)), fontsize=8)
    return fig


def _integral(start, end, value):
    """Breakpoints and cumulative integral of ``value`` on [start, end), 0 between rows."""
    t = np.empty(2 * len(start))
    t[0::2], t[1::2] = start, end
    area = np.zeros(2 * len(start))
    area[1::2] = value * (end - start)
    return t, np.cumsum(area)


def resample(timeline: pd.DataFrame, values: pd.Series, edges: np.ndarray,
             sampled: bool = False) -> pd.DataFrame:
    """Time-weighted mean of ``values`` (aligned with ``timeline``) per instance and time bin
    (``edges``): a frame indexed by bin centre, one column per instance.

    A value holds over its row ([start_s, end_s), 0 between rows), or, ``sampled``, from its
    row's end to the next row's end (state recorded as an iteration ends: KV blocks, queue).
    """
    out = {}
    for inst, rows in timeline.groupby("instance", sort=True):
        rows = rows.sort_values("start_s")
        v = values.loc[rows.index].to_numpy(float)
        if sampled:
            t0 = rows.end_s.to_numpy(float)
            t1 = np.append(t0[1:], max(t0[-1], edges[-1]))
            t, cum = _integral(t0, t1, v)
        else:
            t, cum = _integral(rows.start_s.to_numpy(float), rows.end_s.to_numpy(float), v)
        at = np.interp(edges, t, cum, left=0.0, right=cum[-1] if len(cum) else 0.0)
        out[inst] = np.diff(at) / np.diff(edges)
    return pd.DataFrame(out, index=(edges[:-1] + edges[1:]) / 2)


def queued(requests: pd.DataFrame, edges: np.ndarray) -> np.ndarray:
    """Time-weighted mean number of requests that have arrived and not yet started their
    prefill (or been rejected), per bin: the cluster's whole queue, routers' included."""
    start = requests.arrival_s.to_numpy(float)
    stop = requests.prefill_start_s.fillna(requests.finish_s).to_numpy(float)
    stop = np.where(np.isnan(stop), start, stop)
    t = np.concatenate([start, stop])
    step = np.concatenate([np.ones(len(start)), -np.ones(len(stop))])
    order = np.argsort(t, kind="stable")
    t, level = t[order], np.cumsum(step[order])
    area = np.concatenate([[0.0], np.cumsum(level[:-1] * np.diff(t))])
    at = np.interp(edges, t, area, left=0.0, right=area[-1] if len(area) else 0.0)
    return np.diff(at) / np.diff(edges)


def _edges(results, bins: int) -> np.ndarray:
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"bins: expected a whole number >= 1, got {bins!r}")
    tl, req = results.timeline, results.requests
    start = float(min(req.arrival_s.min(), tl.start_s.min() if len(tl) else np.inf))
    end = float(max(tl.end_s.max() if len(tl) else start, req.finish_s.max()))
    return np.linspace(start, max(end, start + 1e-9), bins + 1)


def _pick(results, max_instances: int):
    if isinstance(max_instances, bool) or not isinstance(max_instances, (int, np.integer)) \
            or max_instances < 1:
        raise ValueError(f"max_instances: expected a whole number >= 1, got {max_instances!r}")
    ids = list(results.instances.instance)
    return ids[:max_instances], len(ids) > max_instances


def instance_timeline(results, bins: int = 300, max_instances: int = 8) -> Figure:
    """Per instance over time: sequences in the batch, KV blocks in use (% of the
    instance's), and the non-idle share of each bin (the first ``max_instances``)."""
    results = _one(results)
    tl, inst = results.timeline, results.instances
    edges = _edges(results, bins)
    ids, more = _pick(results, max_instances)
    tl = tl[tl.instance.isin(ids)]
    total = tl.instance.map(inst.set_index("instance").kv_blocks_total).clip(lower=1)
    panels = [("sequences in batch", tl.prefill_seqs + tl.decode_seqs, False),
              ("KV blocks in use (%)", 100.0 * tl.kv_blocks_used / total, True),
              ("non-idle share of time", pd.Series(1.0, index=tl.index), False)]
    fig, axes = _fig(3, 1, w=8.0, h=2.2, sharex=True)
    names = inst.set_index("instance").name
    x = None
    for ax, (label, values, sampled) in zip(axes[:, 0], panels):
        frame = resample(tl, values, edges, sampled)
        x = frame.index.to_numpy() - edges[0]
        for j, col in enumerate(frame.columns):
            ax.plot(x, frame[col], lw=0.9, color=f"C{j % 10}", label=str(names.get(col, col)))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[2, 0].set_xlabel("time since first arrival (s)")
    axes[2, 0].set_ylim(0, 1.05)
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside lower center",
               ncol=min(len(ids), 6), fontsize=7,
               title=f"first {max_instances} of {len(inst)} instances" if more else None)
    fig.suptitle(f"instance timelines ({bins} bins of {(edges[1] - edges[0]):.3g} s)",
                 fontsize=10)
    return fig


def queue_lengths(results, bins: int = 300, max_instances: int = 8) -> Figure:
    """Requests queued over time: the cluster's (arrived, not yet prefilling: exact, from the
    request frame) and each instance's waiting queue as sampled at its iterations' ends
    (time-weighted per bin)."""
    results = _one(results)
    tl = results.timeline
    edges = _edges(results, bins)
    ids, _ = _pick(results, max_instances)
    frame = resample(tl[tl.instance.isin(ids)], tl.waiting.astype(float), edges, sampled=True)
    fig, axes = _fig(1, 1, w=8.0, h=3.2)
    ax = axes[0, 0]
    x = frame.index.to_numpy() - edges[0]
    names = results.instances.set_index("instance").name
    for j, col in enumerate(frame.columns):
        ax.plot(x, frame[col], lw=0.7, color=f"C{j % 10}",
                label=f"{names.get(col, col)} (at iteration ends)")
    ax.plot(x, queued(results.requests, edges), color="k", lw=1.2,
            label="cluster: arrived, not yet prefilling")
    ax.set(xlabel="time since first arrival (s)", ylabel="requests waiting")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    return fig


def active_instances(results) -> Figure:
    """A controller's active instances (e.g. CPU sockets) over time, stepwise."""
    results = _one(results)
    act = results.activity
    fig, axes = _fig(1, 1, w=7.0, h=3.0)
    ax = axes[0, 0]
    if len(act):
        act = act.sort_values("time_s", kind="stable")
        state: dict = {}
        times, counts = [], []
        for t, inst, on in act.itertuples(index=False):
            state[inst] = bool(on)
            times.append(float(t))
            counts.append(sum(state.values()))
        steps = pd.DataFrame({"t": times, "n": counts}).groupby("t").n.last()
        end = float(results.requests.finish_s.max())
        t0 = float(results.requests.arrival_s.min())
        x = np.append(steps.index.to_numpy(), max(end, steps.index.max())) - t0
        y = np.append(steps.to_numpy(), steps.iloc[-1])
        cpu = _cpu_pool(results, act.instance.unique())
        ax.step(x, y, where="post", label="active CPU sockets" if cpu else "active instances")
        ax.set_ylim(0, max(y) + 1)
    else:
        ax.text(0.5, 0.5, "no controller: every instance active", ha="center",
                transform=ax.transAxes)
    ax.set(xlabel="time since first arrival (s)", ylabel="active instances")
    if len(act):
        ax.legend()
    ax.grid(alpha=0.3)
    return fig


def _cpu_pool(results, ids) -> bool:
    inst = results.instances.set_index("instance")
    return bool(len(ids)) and "kind" in inst and all(inst.kind.get(i) == "cpu" for i in ids)


def _series(frame: pd.DataFrame, x: str, hue: str | None):
    _need(frame, x=x, hue=hue)
    if hue is None:
        yield "", frame.sort_values(x)
        return
    for key, g in frame.groupby(hue, sort=True):
        yield f"{hue}={key}", g.sort_values(x)


def latency_percentiles(frame: pd.DataFrame, x: str = "trace.rate_per_s", metric: str = "ttft",
                        percentiles=(50, 90, 99), hue: str | None = None) -> Figure:
    """Latency percentiles (ms) of a sweep against a varied key (e.g. the offered rate)."""
    _frame(frame)
    for q in percentiles:
        _need(frame, **{"metric, percentiles": f"{metric}_p{q}_s"})
    fig, axes = _fig(1, 1)
    ax = axes[0, 0]
    styles = ["-", "--", ":", "-."]
    slo = frame.get(f"{metric}_slo_s")
    for i, (name, g) in enumerate(_series(frame, x, hue)):
        for j, q in enumerate(percentiles):
            ax.plot(g[x], g[f"{metric}_p{q}_s"] * 1e3, styles[j % 4], marker="o", ms=3,
                    color=f"C{i}", label=f"{name} p{q}".strip())
    if slo is not None and slo.notna().any():
        ax.axhline(float(slo.dropna().iloc[0]) * 1e3, color="k", lw=0.8, ls="--", label="SLO")
    ax.set(xlabel=_axis(x), ylabel=f"{_LATENCY.get(metric + '_s', metric)} (ms)")
    _latency_scale(ax, [frame[f"{metric}_p{q}_s"] * 1e3 for q in percentiles])
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    return fig


def _axis(key: str) -> str:
    return {"trace.rate_per_s": "offered rate (req/s)", "offered_rate_per_s":
            "offered rate (req/s)", "request_throughput_per_s": "throughput (req/s)",
            "instances.0.count": "replicas"}.get(key, key)


def slo_attainment(frame: pd.DataFrame, x: str = "trace.rate_per_s", target: float | None = None,
                   hue: str | None = None) -> Figure:
    """SLO attainment (share of requests within every SLO) against a varied key; ``target``
    a share in (0, 1] drawn as a line."""
    _frame(frame)
    if target is not None and not (isinstance(target, (int, float)) and 0 < target <= 1):
        raise ValueError(f"target: expected a share of requests in (0, 1] (0.9 for 90%), got "
                         f"{target!r}")
    if "slo_attainment" not in frame:
        raise ValueError("the frame has no slo_attainment: its runs had no SLO (the "
                         "experiment's [slo], or ttft_slo_s / tpot_slo_s)")
    fig, axes = _fig(1, 1)
    ax = axes[0, 0]
    for i, (name, g) in enumerate(_series(frame, x, hue)):
        ax.plot(g[x], g.slo_attainment * 100, "o-", ms=3, color=f"C{i}",
                label=name or "attainment")
    if target is not None:
        ax.axhline(target * 100, color="k", ls="--", lw=0.8, label=f"target {target:.0%}")
    ax.set(xlabel=_axis(x), ylabel="SLO attainment (%)", ylim=(0, 101))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def throughput_latency(frame: pd.DataFrame, latency: str = "ttft_p90_s",
                       hue: str | None = None, x: str = "trace.rate_per_s") -> Figure:
    """Achieved throughput (req/s over the arrival window) against a latency percentile (ms),
    points joined in order of ``x``: the knee is where latency climbs while throughput
    stalls."""
    _frame(frame)
    _need(frame, latency=latency)
    fig, axes = _fig(1, 1)
    ax = axes[0, 0]
    order = x if x in frame else "request_throughput_per_s"
    for i, (name, g) in enumerate(_series(frame, order, hue)):
        ax.plot(g.request_throughput_per_s, g[latency] * 1e3, "o-", ms=3, color=f"C{i}",
                label=name or latency)
    metric, _, q = latency[:-2].rpartition("_")
    ax.set(xlabel="throughput (req/s, over the arrival window)",
           ylabel=f"{_LATENCY.get(metric + '_s', metric)} {q} (ms)")
    _latency_scale(ax, frame[latency] * 1e3)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def cost_per_m_tokens(frame: pd.DataFrame, label: str = "label") -> Figure:
    """USD per million tokens (prompt and output) of each run, horizontal bars, named by the
    ``label`` column (a frame without the default ``label`` column: by its index)."""
    _frame(frame)
    _need(frame, cost="cost_per_m_tokens_usd", label=None if label == "label" else label)
    labels = frame[label].astype(str) if label in frame else frame.index.astype(str)
    longest = max((len(x) for x in labels), default=10)
    fig, axes = _fig(1, 1, w=4.5 + 0.075 * longest, h=1.4 + 0.35 * len(frame))
    ax = axes[0, 0]
    ax.barh(labels, frame.cost_per_m_tokens_usd, color="C0",
            label="per M tokens (prompt + output)")
    if "cost_per_m_output_tokens_usd" in frame:
        ax.scatter(frame.cost_per_m_output_tokens_usd, labels, color="C3", marker="|", s=200,
                   label="per M output tokens")
    ax.set(xlabel="cost (USD per million tokens)", ylabel="run")
    ax.invert_yaxis()
    fig.legend(*ax.get_legend_handles_labels(), loc="outside upper center", ncol=2,
               fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return fig


def _result(result, question: str, frame: str) -> None:
    """``result`` is what ``question`` returns (it has the ``frame`` the figure draws)."""
    if not isinstance(getattr(result, frame, None), pd.DataFrame):
        raise TypeError(f"expected what {question}() returns, got {type(result).__name__}")


def capacity_curve(result) -> Figure:
    """A capacity search: attainment at each rate it evaluated, the target, the answer."""
    _result(result, "capacity", "points")
    pts = result.points
    fig, axes = _fig(1, 1)
    ax = axes[0, 0]
    ax.plot(pts.rate_per_s, pts.slo_attainment * 100, "-", color="0.6", lw=0.8)
    for ok, marker, color, name in ((True, "o", "C2", "meets"), (False, "x", "C3", "fails")):
        p = pts[pts.meets == ok]
        ax.scatter(p.rate_per_s, p.slo_attainment * 100, marker=marker, color=color,
                   label=name, zorder=3)
    ax.axhline(result.attainment * 100, color="k", ls="--", lw=0.8,
               label=f"target {result.attainment:.0%}")
    if result.rate_per_s > 0:
        ax.axvline(result.rate_per_s, color="C2", lw=1.0,
                   label=f"capacity {result.rate_per_s:.3g} req/s")
    ax.set(xlabel="offered rate (req/s)", ylabel="SLO attainment (%)", ylim=(-2, 102),
           xscale="log")
    _plain_log(ax.xaxis, pts.rate_per_s.max() / pts.rate_per_s.min())
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def cheapest_candidates(result) -> Figure:
    """Candidates of a cheapest-configuration search: price per hour, coloured by whether
    they meet the SLOs, the cheapest marked."""
    _result(result, "cheapest", "candidates")
    t = result.candidates.sort_values("usd_per_hour")
    longest = max((len(x) for x in t.config), default=10)
    fig, axes = _fig(1, 1, w=4.5 + 0.075 * longest, h=1.4 + 0.3 * len(t))
    ax = axes[0, 0]
    colors = ["C2" if m else "C3" for m in t.meets]
    ax.barh(t.config, t.usd_per_hour, color=colors)
    handles = [Patch(color="C2", label="meets the SLOs"), Patch(color="C3", label="does not")]
    if result.best is not None:
        ax.axvline(result.best["usd_per_hour"], color="k", ls="--", lw=0.8,
                   label=f"cheapest: {result.best['config']}")
    ax.set(xlabel="price (USD per hour)", ylabel="configuration",
           title=f"{result.rate_per_s:.3g} req/s at {result.attainment:.0%} SLO attainment")
    ax.invert_yaxis()
    handles += ax.get_legend_handles_labels()[0]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return fig


def save(figures: Mapping[str, Figure], directory, dpi: int = 110) -> list[Path]:
    """Write each figure as ``directory/NAME.png``; the paths written."""
    from simcluster.paths import out_dir
    if not isinstance(figures, Mapping) or not all(isinstance(f, Figure)
                                                   for f in figures.values()):
        raise TypeError(f"figures: expected a mapping of name -> Figure (what run_figures "
                        f"returns), got {type(figures).__name__}")
    d = out_dir(directory, "directory")
    d.mkdir(parents=True, exist_ok=True)
    out = []
    for name, fig in figures.items():
        path = d / f"{name}.png"
        fig.savefig(path, dpi=dpi)
        out.append(path)
    return out


def run_figures(results, bins: int = 300) -> dict[str, Figure]:
    """The figures of one run: latency CDFs, instance timelines, queue lengths, and active
    instances when a controller ran."""
    results = _one(results)
    figs = {"latency_cdf": latency_cdf(results), "instance_timeline":
            instance_timeline(results, bins), "queue_lengths": queue_lengths(results, bins)}
    if len(results.activity):
        figs["active_instances"] = active_instances(results)
    return figs


#: What the module offers (``import *``, and ``dir(sc.plots)``: a
#: notebook's completion lists these, not the numpy, pandas and matplotlib names used above).
__all__ = ["PlotFigure", "latency_cdf", "instance_timeline", "queue_lengths",
           "active_instances", "latency_percentiles", "slo_attainment", "throughput_latency",
           "cost_per_m_tokens", "capacity_curve", "cheapest_candidates", "run_figures", "save",
           "resample", "queued"]


def __dir__():
    return list(__all__)
