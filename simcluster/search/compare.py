"""Compare a few configurations side by side: run each (keeping its frames), tabulate
latency / throughput / SLO / cost / energy (and prefix-cache hits where runs cache), and draw
their latency CDFs and costs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from simcluster.errors import InputError
from simcluster.paths import out_dir

from simcluster.analysis.compare import compare_table, flat, format_compare
from simcluster.search.sweep import frame as sweep_frame
from simcluster.search.sweep import run_points, write_parquet


@dataclass
class Comparison:
    """Runs by label: the sweep-style ``frame`` (one row each), their ``results`` (frames of
    each run; absent for a run that raised) and the grouped ``table``."""

    frame: pd.DataFrame
    results: dict
    table: pd.DataFrame

    def __str__(self) -> str:
        return format_compare(self.table)

    __repr__ = __str__          # a notebook cell ending in the comparison shows the table

    def figures(self, bins: int = 300) -> dict:
        """Latency CDFs of every run, their cost per million tokens, and each run's instance
        timeline."""
        from simcluster.analysis import plots
        figs = {}
        if self.results:
            figs["latency_cdf"] = plots.latency_cdf(self.results)
        ok = self.frame[self.frame.error == ""]
        if len(ok) and "cost_per_m_tokens_usd" in ok:
            figs["cost_per_m_tokens"] = plots.cost_per_m_tokens(ok)
        for i, (label, res) in enumerate(self.results.items()):
            figs[f"timeline_{i}"] = plots.instance_timeline(res, bins)
            figs[f"timeline_{i}"].suptitle(f"{label}: instance timelines", fontsize=10)
        return figs

    def save(self, directory) -> Path:
        """``compare.csv`` and ``compare.parquet`` (columns ``group.metric``)."""
        d = out_dir(directory, "directory")    # (a file there: named, not FileExistsError)
        d.mkdir(parents=True, exist_ok=True)
        table = flat(self.table)
        table.to_csv(d / "compare.csv", index=False)
        write_parquet(table, d / "compare.parquet")
        return d


def compare_points(points, labels, runner=None, progress: bool = True) -> Comparison:
    """Run ``points`` (labelled) keeping their frames; the comparison."""
    if len(set(labels)) != len(labels):
        raise InputError(f"the runs' labels must differ, got {labels}")
    outcomes = run_points(points, runner, keep=True, progress=progress, desc="compare")
    frame = sweep_frame(points, outcomes, labels=labels)
    results = {lab: o.results for lab, o in zip(labels, outcomes) if o.results is not None}
    return Comparison(frame, results, compare_table(frame))
