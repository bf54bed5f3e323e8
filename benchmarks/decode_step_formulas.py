"""How far a lone pure-decode step read from the decode step table is from the scalar formula.

    python benchmarks/decode_step_formulas.py [--shapes 60] [--seed 1]

A replica times a single pure-decode iteration from its timer's decode step table (the
vectorised formula every step of a decode run uses: ``serving/steps.py``); ``IterationTimer.time``
evaluates the same model through numpy's scalar paths. For every model preset x device x
bundled calibration, ``--shapes`` random (batch, context sum) pairs are timed both ways; the
table gives, per calibration, the shapes compared, how many differ at all, and the largest
relative difference.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", type=int, default=60)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    from simcluster.calibration import load_calibration
    from simcluster.cost import Layout
    from simcluster.cost.model import IterationTimer
    from simcluster.hardware import list_devices, load_device
    from simcluster.models import list_models, model_preset
    empty = np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng(args.seed)
    print(f"{'calibration':12s} {'timers':>7s} {'shapes':>8s} {'differ':>7s} {'max rel diff':>13s}")
    for name in ("measured", "datasheet"):
        cal = load_calibration(name)
        timers = shapes = differ = 0
        worst = 0.0
        for preset in list_models():
            model = model_preset(preset)
            for dev in list_devices():
                try:
                    t = IterationTimer(cal, model, Layout.uniform(load_device(dev)))
                except ValueError:        # (the model does not fit that device alone)
                    continue
                timers += 1
                for _ in range(args.shapes):
                    n = int(rng.integers(1, 300))
                    s = int(n * rng.integers(1, 9000) + rng.integers(0, n))
                    a = t.time(empty, empty, n, s, n)
                    b = float(t.decode_steps(n, s, 1)[0])
                    shapes += 1
                    differ += a != b
                    worst = max(worst, abs(a - b) / abs(a))
        print(f"{name:12s} {timers:7d} {shapes:8d} {differ:7d} {worst:13.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
