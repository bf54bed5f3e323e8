"""Options several commands share: ``--set`` / ``--trace``, ``--plots``, ``--jobs`` /
``--ray``, ``--out``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_set(p) -> None:
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a key of the experiment TOML (repeatable), e.g. "
                        "router.policy=round_robin, instances.0.count=8, "
                        "trace.rate_per_s=12, seed=3; "
                        "checked like the file's keys; a relative path in a value is relative "
                        "to the current folder")
    p.add_argument("--trace", dest="sets", action=_TraceFile, metavar="FILE",
                   help="serve this trace file (CSV, JSONL, Parquet; Azure, Mooncake or Vidur "
                        "columns) or bundled trace (simcluster list traces) instead of the "
                        "experiment's [trace]: --set trace={source=FILE}, applied before any "
                        "--set (so --set trace.rate_per_s=... rescales it)")


class _TraceFile(argparse.Action):
    """``--trace FILE``: the override ``trace = {source = FILE}``, first among the --set's."""

    def __call__(self, parser, namespace, value, option_string=None):
        if not Path(value).expanduser().is_file():
            from simcluster.workload import bundled_traces
            names = bundled_traces()
            if value not in names:
                parser.error(f"argument --trace: {value!r} is not a file; expected a trace "
                             f"file or a bundled trace ({', '.join(names)})")
        if getattr(namespace, "_trace_given", False):
            parser.error("argument --trace: given twice; expected one trace file")
        namespace._trace_given = True
        source = json.dumps(str(Path(value).expanduser()))     # (a TOML basic string)
        setattr(namespace, self.dest,
                [f"trace={{source = {source}}}"] + list(getattr(namespace, self.dest) or []))


def add_plots(p) -> None:
    p.add_argument("--plots", metavar="DIR", help="write figures (PNG) into DIR")


def add_runner(p, jobs_default=None) -> None:
    from simcluster.cli.checks import positive_int
    p.add_argument("--jobs", type=positive_int, default=jobs_default,
                   help="local worker processes (default: the machine's cores; 1: this process)")
    p.add_argument("--ray", metavar="ADDRESS",
                   help='run on Ray: "local" starts one inside this command with the '
                        'machine\'s cores, or a cluster address (pip install "simcluster[ray]")')
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_cache(p) -> None:
    p.add_argument("--fresh", action="store_true",
                   help="run every point again, ignoring results already in --out (a point "
                        "is found there by its configuration and the files it names; a "
                        "plugin's code is not seen)")


def write_figures(figures: dict, directory) -> None:
    from simcluster.analysis.plots import save
    paths = save(figures, directory)
    print(f"wrote {len(paths)} figures to {directory}: "
          f"{', '.join(p.name for p in paths)}")


def warn(message: str) -> None:
    print(f"simcluster: {message}", file=sys.stderr)


#: The help of a command's experiment argument.
EXPERIMENT_HELP = ("an experiment TOML's path or a bundled experiment's name (simcluster list "
                   "experiments); default: the bundled default")
