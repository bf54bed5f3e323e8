"""Digest of every bundled experiment's results: proof that a refactor changed nothing.

    python benchmarks/digest_experiments.py [--jobs 2] [--only NAME ...] [--max-steady-steps N]

Runs each ``experiments/*.toml`` through the command line (``simcluster run EXP --out DIR``)
and prints, per experiment, the SHA-256 of its ``summary.json`` and ``requests.csv`` (and of
``timeline.csv``). Two runs of this script on two versions of the code print the same table
exactly when every result is bit-identical. ``--max-steady-steps 1`` runs every experiment with
decode runs capped at one step per event (the slow, obviously-correct schedule).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def run_one(exp: str, extra: list[str]) -> tuple[str, str, str, str, float]:
    from simcluster.cli import main
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        import contextlib
        import io
        with contextlib.redirect_stdout(io.StringIO()):
            rc = main(["run", exp, "--quiet", "--out", d, *extra])
        wall = time.perf_counter() - t0
        if rc:
            return Path(exp).stem, f"exit {rc}", "", "", wall
        out = Path(d)
        return (Path(exp).stem, _digest(out / "summary.json"), _digest(out / "requests.csv"),
                _digest(out / "timeline.csv"), wall)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--only", nargs="*", default=None, help="experiment names (file stems)")
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[],
                    help="further arguments for 'simcluster run' (e.g. --set KEY=VALUE)")
    args = ap.parse_args(argv)
    exps = sorted((ROOT / "experiments").glob("*.toml"))
    if args.only:
        exps = [e for e in exps if e.stem in args.only]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        rows = list(pool.map(run_one, [str(e) for e in exps], [args.extra] * len(exps)))
    print(f"{'experiment':<34} {'summary.json':<17} {'requests.csv':<17} {'timeline.csv':<17} wall_s")
    for name, s, r, t, wall in rows:
        print(f"{name:<34} {s:<17} {r:<17} {t:<17} {wall:6.1f}")
    return 0 if all(not r[1].startswith("exit") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
