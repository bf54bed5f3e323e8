"""Command line: a thin shell that parses, calls the library, and prints.

simcluster run [EXPERIMENT.toml] [--trace FILE] [--set K=V] [--out DIR] [--plots DIR]
               [--timeline-out F.json]            simulate (the bundled default if none)
simcluster compare EXP.toml --vary K=V1,V2        side-by-side table of variants
simcluster sweep SWEEP.toml [--jobs N|--ray local] a grid of points -> one tidy frame
simcluster capacity EXP.toml --ttft-slo S         highest rate meeting the SLOs
simcluster cheapest EXP.toml --rate R --devices A,B --tp 1,2
                                                  cheapest replicas serving R within SLOs
simcluster search SPACE.toml [--out DIR]          hardware design search: Pareto front of
                                                  (serving time, cost), LLMShare's method
simcluster trace-info FILE                        rate, span, length percentiles
simcluster predict ...                            one operator / iteration, or a CSV
simcluster calibrate --out DIR                    measure kernel tables (needs torch)
simcluster validate MEASURED.csv --device NAME    prediction errors against measurements
simcluster calibrate-engine LOG.csv... --device NAME --model NAME --name ENGINE
                                                  fit an engine model to iteration logs
simcluster validate-e2e REPLAY.csv --engine NAME  simulated vs measured latencies
simcluster list devices|links|nodes|models|routers|batching|controllers|partitions|...

Exit status: 0 done (also when the reader of the output goes away, as with ``| head``);
2 bad input — a usage mistake or an input file, name or value simcluster refuses, told in one
line ``simcluster: error: ...`` naming the file, key or argument — or a configuration with
no answer: a run that served nothing (the model does not fit, every request rejected), a
compare variant that could not run, a sweep whose every point failed, a capacity or cheapest
search that nothing passes, a design search with no feasible design, or a file the system
would not let simcluster read or write (its path and the system's reason); 1 a bug in simcluster
(an internal error, printed with its traceback to report); 130 interrupted. ``--version``
prints the installed version.
"""

from __future__ import annotations

import os
import sys
import traceback

from simcluster.errors import InputError

EXIT_OK, EXIT_BUG, EXIT_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130

#: What ``simcluster -h`` says before the commands (the docstring above is for developers).
DESCRIPTION = ("Simulate LLM-serving clusters on request traces. 'simcluster run' simulates the "
               "bundled default experiment; 'simcluster COMMAND -h' gives a command's options; "
               "'simcluster list experiments' names the bundled experiments.")


def build_parser():
    from simcluster.cli import design, measure, search, simulate
    from simcluster.cli.checks import Parser
    from simcluster import __version__
    p = Parser(prog="simcluster", description=DESCRIPTION,
               epilog="exit status: 0 ok, 2 bad input, 1 internal error (a bug)")
    p.add_argument("--version", action="version", version=f"simcluster {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    simulate.add_commands(sub)
    search.add_commands(sub)
    design.add_commands(sub)
    measure.add_commands(sub)
    return p


def main(argv=None) -> int:
    """Run one command; the exit status (see the module docstring)."""
    args = build_parser().parse_args(argv)      # usage mistakes: argparse exits 2
    try:
        from simcluster.cli.checks import check_flags
        check_flags(args)                       # a flag that would do nothing
        code = args.func(args)
        sys.stdout.flush()                      # a closed pipe shows here, not at exit
        return code
    except InputError as err:
        print(f"simcluster: error: {err}", file=sys.stderr)
        return EXIT_INPUT
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_OK
    except KeyboardInterrupt:
        print("simcluster: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as err:
        if err.filename is None:            # (not about a file of the user's: a bug)
            return _bug()
        # a file or folder the system refused: a full disk, a read-only or special folder
        print(f"simcluster: error: {err.filename}: {err.strerror or err}", file=sys.stderr)
        return EXIT_INPUT
    except Exception:  # noqa: BLE001 (anything else is simcluster's bug: say so)
        return _bug()


def _bug() -> int:
    print("simcluster: internal error (a bug in simcluster; please report it with the "
          "command line and this traceback):", file=sys.stderr)
    traceback.print_exc()
    return EXIT_BUG


def _silence_stdout() -> None:
    """The reader went away: point stdout at devnull so the exit flush does not fail too."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
