"""Simulator speed: the whole Azure conversation trace (19,366 requests) on Llama-2-7B.

Runs the trace on one H100-SXM instance and on four (least-outstanding-tokens router), each
``--repeats`` times, and prints wall time and process CPU time (medians; on a shared machine
the CPU time is the steadier figure), peak Python memory (tracemalloc, one extra run), and
simulated requests per wall-second and per CPU-second. Usage:

    python benchmarks/bench_simulator.py [--repeats 3] [--calibration measured|datasheet]
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc

from simcluster.calibration import load_calibration
from simcluster.cluster import InstanceSpec
from simcluster.cost import CostModel, Layout
from simcluster.hardware import load_device
from simcluster.serving.config import InstanceConfig
from simcluster.models import model_preset
from simcluster.simulation import Simulation
from simcluster.workload import load_trace


def one_run(trace, model, count, cost):
    # max_model_len 16k (Llama-2-7B's native 4k would reject 8% of the trace's prompts):
    # the benchmark measures the simulator on every request of the trace.
    cfg = InstanceConfig(max_model_len=16384, max_batched_tokens=16384)
    spec = InstanceSpec(Layout.uniform(load_device("H100-SXM")), cfg, count=count)
    sim = Simulation(trace, model, [spec], router="least_outstanding_tokens", cost_model=cost)
    t0, c0 = time.perf_counter(), time.process_time()
    res = sim.run()
    return time.perf_counter() - t0, time.process_time() - c0, res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--calibration", default="measured")
    ap.add_argument("--trace", default="azure-conv")
    args = ap.parse_args()
    trace = load_trace(args.trace)
    model = model_preset("llama-2-7b")
    cost = CostModel(load_calibration(args.calibration))
    rows = []
    for count in (1, 4):
        walls, cpus = [], []
        for _ in range(args.repeats):
            wall, cpu, res = one_run(trace, model, count, cost)
            walls.append(wall)
            cpus.append(cpu)
        tracemalloc.start()
        one_run(trace, model, count, cost)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        s = res.summary()
        med, cpu = statistics.median(walls), statistics.median(cpus)
        rows.append((count, len(trace), s["finished"], s["rejected"], len(res.timeline),
                     med, min(walls), max(walls), cpu, peak / 2**20, len(trace) / med,
                     len(trace) / cpu))
    print(f"trace {args.trace}: {len(trace)} requests, Llama-2-7B on H100-SXM, "
          f"calibration {args.calibration}, {args.repeats} repeats")
    hdr = ("instances", "requests", "finished", "rejected", "events", "wall_med_s",
           "wall_min_s", "wall_max_s", "cpu_med_s", "peak_py_MiB", "req_per_wall_s",
           "req_per_cpu_s")
    print(" ".join(f"{h:>14}" for h in hdr))
    for r in rows:
        print(" ".join(f"{v:>14.3f}" if isinstance(v, float) else f"{v:>14}" for v in r))


if __name__ == "__main__":
    main()
