"""Command line: a thin shell that parses, calls the library, and prints.

simcluster run [EXPERIMENT.toml] [--set K=V] [--out DIR] [--plots DIR] [--timeline-out F.json]
                                                  simulate (the bundled default if none)
simcluster compare EXP.toml --vary K=V1,V2        side-by-side table of variants
simcluster sweep SWEEP.toml [--jobs N|--ray local] a grid of points -> one tidy frame
simcluster capacity EXP.toml --ttft-slo S         highest rate meeting the SLOs
simcluster cheapest EXP.toml --rate R --devices A,B --tp 1,2
                                                  cheapest replicas serving R within SLOs
simcluster trace-info FILE                        rate, span, length percentiles
simcluster predict ...                            one operator / iteration, or a CSV
simcluster calibrate --out DIR                    measure kernel tables (needs torch)
simcluster validate MEASURED.csv --device NAME    prediction errors against measurements
simcluster calibrate-engine LOG.csv... --device NAME --model NAME --name ENGINE
                                                  fit an engine model to iteration logs
simcluster validate-e2e REPLAY.csv --engine NAME  simulated vs measured latencies
simcluster list devices|links|nodes|models|routers|batching|controllers|partitions|...
"""

from __future__ import annotations

import argparse
import sys

from simcluster.errors import InputError


def build_parser() -> argparse.ArgumentParser:
    from simcluster.cli import measure, search, simulate
    p = argparse.ArgumentParser(prog="simcluster", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    simulate.add_commands(sub)
    search.add_commands(sub)
    measure.add_commands(sub)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (InputError, KeyError, FileNotFoundError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"simcluster: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
