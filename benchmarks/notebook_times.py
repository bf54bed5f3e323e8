"""How long each notebook takes to execute, top to bottom (what CI pays for them).

    python benchmarks/notebook_times.py [--repeat 3]

Each notebook runs in a fresh kernel (as tests/test_notebooks.py runs it), so its time
includes starting Python, importing simcluster and fitting the measured calibration once; the
simulation column is the time of the cells alone.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _cells_s(nb) -> float:
    total = 0.0
    for cell in nb.cells:
        ex = cell.get("metadata", {}).get("execution", {})
        a, b = ex.get("iopub.execute_input"), ex.get("shell.execute_reply")
        if a and b:
            total += (datetime.fromisoformat(b.replace("Z", "+00:00"))
                      - datetime.fromisoformat(a.replace("Z", "+00:00"))).total_seconds()
    return total


def run(path: Path) -> tuple[float, float, int]:
    import nbclient
    import nbformat
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", record_timing=True,
                                     resources={"metadata": {"path": str(path.parent)}})
    t0 = time.perf_counter()
    client.execute()
    images = sum("image/png" in o.get("data", {}) for c in nb.cells
                 for o in c.get("outputs", []))
    return time.perf_counter() - t0, _cells_s(nb), images


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args(argv)
    os.environ["PYTHONPATH"] = str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")
    print(f"{'notebook':<26}{'wall s (median)':>16}{'cells s':>10}{'images':>8}   "
          f"(load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} cores)")
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        runs = [run(path) for _ in range(args.repeat)]
        wall = statistics.median(r[0] for r in runs)
        cells = statistics.median(r[1] for r in runs)
        print(f"{path.name:<26}{wall:>16.1f}{cells:>10.1f}{runs[0][2]:>8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
