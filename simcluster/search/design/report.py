"""What a design search found, as tables and a figure: the front, the front's best designs
beside a baseline design (LLMShare's H100 cluster), and the hypervolume per iteration.

Plain functions of a :class:`~simcluster.search.design.loop.SearchResult` and of the figures
of every evaluated design (a DataFrame indexed by design hash, as the cached evaluator keeps
them); the figure is drawn with matplotlib (Agg), without pyplot's global state.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from simcluster.hardware.parametric import ROW_FIELDS
from simcluster.search.design.metrics import pareto_front
from simcluster.search.design.space import POOLS

#: axis labels of the figures a search may minimise
LABELS = {
    "serving_time_s": "serving time of the trace (s)",
    "capex_usd": "purchase price of the servers (USD)",
    "usd_per_hour": "cost of ownership (USD per hour)",
    "run_cost_usd": "cost of the run (USD)",
    "energy_kwh": "device energy of the run (kWh)",
}
#: figures shown beside the objectives when comparing designs
SHOWN = ("serving_time_s", "ttft_p90_s", "tpot_p90_s", "capex_usd", "usd_per_hour",
         "energy_kwh", "requests_per_s")


def _figure_class():
    import io

    from matplotlib.figure import Figure

    class SearchFigure(Figure):
        """A Figure that displays itself in Jupyter (as PNG) without pyplot or a magic (as
        the search layer's plots do)."""

        def _repr_png_(self) -> bytes:
            buf = io.BytesIO()
            self.savefig(buf, format="png", dpi=90)
            return buf.getvalue()
    return SearchFigure


def figure(**kw):
    """A new figure that shows itself inline in a notebook (``figsize``, ``layout``, ...)."""
    return _figure_class()(**kw)


def label(metric: str) -> str:
    """An axis label with the unit: ``ttft_p90_s`` -> ``TTFT p90 (s)``."""
    if metric in LABELS:
        return LABELS[metric]
    name, _, unit = metric.rpartition("_")
    head, _, pct = name.partition("_")
    return f"{head.upper()} {pct} ({unit})" if pct else f"{metric}"


def rows_of(design) -> dict:
    """A design's two pools as the source's ten-number rows (server count first)."""
    return {f"{pool}_row": ",".join(_fmt(design[f"{pool}_{f}"]) for f in ROW_FIELDS)
            for pool in POOLS}


def _fmt(v) -> str:
    v = float(v)
    return str(int(v)) if v == int(v) else f"{v:g}"


def front_table(result, figures: pd.DataFrame | None = None) -> pd.DataFrame:
    """The front's designs (by the first objective), their rows, objectives and figures."""
    front = result.front()
    if front.empty:
        return front
    out = pd.DataFrame([rows_of(r) for r in front.to_dict("records")])
    out.insert(0, "iteration", front["iteration"].to_numpy())
    for o in result.objectives:
        out[o] = front[o].to_numpy()
    if figures is not None:
        extra = figures.reindex(front["design_hash"])
        for c in SHOWN:
            if c in extra.columns and c not in out.columns:
                out[c] = extra[c].to_numpy()
    out["design_hash"] = front["design_hash"].to_numpy()
    return out


def picks(front: pd.DataFrame, objectives, baseline: dict | None) -> list[tuple[str, int]]:
    """The front's designs worth showing beside the baseline, as (why, row of ``front``):
    the fastest, the cheapest, and — when there are some — the cheapest design no slower
    than the baseline and the fastest no dearer than it (one label per design)."""
    if front.empty:
        return []
    t, c = objectives
    out = [("fastest", int(front[t].idxmin())), ("cheapest", int(front[c].idxmin()))]
    if baseline is not None and np.isfinite(baseline.get(t, np.nan)):
        no_slower = front[front[t] <= baseline[t]]
        if not no_slower.empty:
            out.append(("cheapest no slower", int(no_slower[c].idxmin())))
        no_dearer = front[front[c] <= baseline[c]]
        if not no_dearer.empty:
            out.append(("fastest no dearer", int(no_dearer[t].idxmin())))
    seen, unique = set(), []
    for why, i in out:
        if i not in seen:
            seen.add(i)
            unique.append((why, i))
        else:
            j = next(k for k, (_, idx) in enumerate(unique) if idx == i)
            unique[j] = (unique[j][0] + ", " + why, i)
    return [(f"front: {why}", i) for why, i in unique]


def comparison_table(front: pd.DataFrame, objectives, baseline: dict | None) -> pd.DataFrame:
    """The baseline and the front's picked designs, each objective also as a ratio to the
    baseline's (below 1: better)."""
    rows = []
    if baseline is not None:
        rows.append({"design": baseline["name"], **{k: baseline.get(k) for k in
                                                    ("prefill_row", "decode_row")},
                     **{k: baseline.get(k, np.nan) for k in _cols(objectives)}})
    for why, i in picks(front, objectives, baseline):
        r = front.loc[i]
        rows.append({"design": why, "prefill_row": r["prefill_row"],
                     "decode_row": r["decode_row"],
                     **{k: r.get(k, np.nan) for k in _cols(objectives)}})
    out = pd.DataFrame(rows)
    if baseline is not None and not out.empty:
        for o in objectives:
            out[f"{o} / baseline"] = out[o] / baseline.get(o, np.nan)
    return out


def _cols(objectives) -> list[str]:
    return list(objectives) + [c for c in SHOWN if c not in objectives]


def plot(result, baseline: dict | None = None, true_front=None, path=None):
    """Two panels: every feasible evaluated design (initial ones apart), the found front and
    the baseline; the hypervolume after each iteration. Returns the matplotlib Figure
    (saved as PNG at ``path`` when given)."""
    from matplotlib.ticker import MaxNLocator
    t, c = result.objectives
    fig = figure(figsize=(11, 4.4), layout="constrained")
    ax, hx = fig.subplots(1, 2, width_ratios=[3, 2])
    h = result.history[result.history["feasible"]]
    init, later = h[h["iteration"] == 0], h[h["iteration"] > 0]
    if true_front is not None and len(true_front):
        tf = np.asarray(true_front, float)
        ax.step(tf[:, 0], tf[:, 1] / _scale(c), where="post", color="0.6", ls="--", lw=1,
                label=f"true front ({len(tf)} designs)")
    ax.scatter(init[t], init[c] / _scale(c), s=28, marker="s", color="tab:gray",
               label=f"initial designs ({len(init)} feasible)")
    sc = ax.scatter(later[t], later[c] / _scale(c), s=30, c=later["iteration"], cmap="viridis",
                    label=f"chosen by {result.method} ({len(later)} feasible)")
    front = pareto_front(h[[t, c]].to_numpy(float)) if len(h) else np.zeros((0, 2))
    if len(front):
        ax.step(front[:, 0], front[:, 1] / _scale(c), where="post", color="tab:red", lw=1.4)
        ax.scatter(front[:, 0], front[:, 1] / _scale(c), s=90, facecolor="none",
                   edgecolor="tab:red", lw=1.6, label=f"found front ({len(front)} designs)")
    if baseline is not None and np.isfinite(baseline.get(t, np.nan)):
        ax.scatter([baseline[t]], [baseline[c] / _scale(c)], marker="*", s=220,
                   color="tab:orange", edgecolor="k", zorder=5, label=baseline["name"])
    if len(h) and h[t].max() / h[t].min() > 5:         # a few slow designs squash the rest
        from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 1.5, 2.0, 3.0, 5.0, 7.0)))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(label(t))
    ax.set_ylabel(label(c).replace("(USD)", "(million USD)") if _scale(c) > 1 else label(c))
    ax.set_title(f"{result.method}, seed {result.seed}: "
                 f"{len(result.history)} designs evaluated", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    if len(later):
        bar = fig.colorbar(sc, ax=ax, label="iteration that chose it", pad=0.01)
        bar.locator = MaxNLocator(integer=True)
        bar.update_ticks()
    hv = result.hypervolume
    hx.plot(hv["iteration"], hv["hypervolume"] / _scale(c), marker="o", ms=3,
            label="found designs")
    if true_front is not None and len(true_front):
        from simcluster.search.design.metrics import hypervolume_2d
        hx.axhline(hypervolume_2d(true_front, result.ref_point) / _scale(c), color="0.5",
                   ls="--", label="true front")
    hx.set_xlabel("iteration (0: initial designs)")
    hx.xaxis.set_major_locator(MaxNLocator(integer=True))
    units = [label(m).rpartition("(")[2].rstrip(")") for m in (t, c)]
    hx.set_ylabel(f"hypervolume ({units[0]} x {'million ' if _scale(c) > 1 else ''}"
                  f"{units[1]})")
    r0, r1 = result.ref_point
    hx.set_title(f"reference point: {r0:.4g} {units[0]}, {r1 / _scale(c):.4g} "
                 f"{'million ' if _scale(c) > 1 else ''}{units[1]}", fontsize=10)
    hx.grid(alpha=0.3)
    hx.legend(fontsize=8, loc="lower right")
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def _scale(metric: str) -> float:
    return 1e6 if metric == "capex_usd" else 1.0
