"""LLMShare part 1: the tables of docs/llmshare.md, regenerated.

    python benchmarks/llmshare_tables.py [--write] [--skip-capacity] [--designs N]

1. The H100 row of LLMShare's table as a parametric device vs the H100-SXM spec: peaks, die
   area, server price and dollars per hour.
2. Iteration times of the H100 row (tile model) vs the H100-SXM spec (measured kernels) on
   Llama-2-70B and GPT-3 175B batches, tensor parallel over 8 devices.
3. The tile model's per-kernel fixed times: intercepts of time against bytes over the
   memory-bound kernels measured on the H100 (hwspecs/calibration/H100-SXM).
4. The bundled experiments (experiments/llmshare_h100.toml, llmshare_design.toml): cost and
   requests per second of the LLMShare design normalised to the H100 cluster, beside the
   source's 0.87 and 4.11, with the capacity (the highest arrival rate, the same 2,454
   requests rescaled, at which 90% of requests meet TTFT <= 2 s and TPOT <= 0.1 s).
5. Seconds per design of :func:`simcluster.simulation.design.evaluate_design` on the 2,454-
   request trace, over designs drawn from LLMShare's design space (seeded).

``--write`` replaces the generated blocks of docs/llmshare.md (between ``<!-- begin: name -->``
and ``<!-- end: name -->``; benchmarks/docblocks.py).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from simcluster.calibration import load_calibration  # noqa: E402
from simcluster.calibration.tables import load_tables  # noqa: E402
from simcluster.calibration.tiles import DRAM_EFFICIENCY  # noqa: E402
from simcluster.cost import Batch, CostModel, Layout  # noqa: E402
from simcluster.experiment import load_experiment  # noqa: E402
from simcluster.hardware import load_device, load_link  # noqa: E402
from simcluster.hardware.area import die_area  # noqa: E402
from simcluster.hardware.designed import designed_device  # noqa: E402
from simcluster.hardware.parametric import (DESIGN_SPACE, H100_DECODE_ROW,  # noqa: E402
                                            H100_PREFILL_ROW, LLMSHARE_DECODE_ROW,
                                            LLMSHARE_PREFILL_ROW, AcceleratorDesign,
                                            PoolDesign, ServingDesign, parse_row)
from simcluster.hardware.tco import design_cost  # noqa: E402
from simcluster.models import model_preset  # noqa: E402
from simcluster.simulation.design import evaluate_design  # noqa: E402

DOC = ROOT / "docs" / "llmshare.md"
SOURCE_COST, SOURCE_RPS = 0.87, 4.11
SEMIANALYSIS_DGX_H100_USD = 270_000
H100_DIE_MM2 = 814
SLO = (2.0, 0.1)


def table(header, rows) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def peaks_table() -> str:
    d = parse_row(H100_PREFILL_ROW).design
    spec, cost = load_device("H100-SXM"), design_cost(d)
    nvlink = load_link("NVLink4").bw_bytes_per_s
    rows = [("dense bf16 TFLOP/s", f"{d.matrix_flops / 1e12:.1f}",
             f"{spec.peak_flops_for('bf16') / 1e12:.1f}",
             f"{d.matrix_flops / spec.peak_flops_for('bf16') - 1:+.1%}"),
            ("HBM TB/s", f"{d.mem_bw_bytes_per_s / 1e12:.3f}",
             f"{spec.mem_bw_bytes_per_s / 1e12:.3f}",
             f"{d.mem_bw_bytes_per_s / spec.mem_bw_bytes_per_s - 1:+.1%}"),
            ("NVLink GB/s per direction", f"{d.link_bw_bytes_per_s / 1e9:.0f}",
             f"{nvlink / 1e9:.0f}", f"{d.link_bw_bytes_per_s / nvlink - 1:+.1%}"),
            ("fp32 vector TFLOP/s", f"{d.vector_flops / 2e12:.1f}",
             f"{spec.peak_flops_for('fp32') / 1e12:.1f}",
             f"{d.vector_flops / 2 / spec.peak_flops_for('fp32') - 1:+.1%}"),
            ("die area mm^2", f"{die_area(d).total_mm2:.0f}", f"{H100_DIE_MM2}",
             f"{die_area(d).total_mm2 / H100_DIE_MM2 - 1:+.1%}"),
            ("device build cost USD", f"{cost.device_usd:,.0f}", "3,320 (Raymond James)",
             f"{cost.device_usd / 3320 - 1:+.1%}"),
            ("8-device server price USD", f"{cost.server_price_usd:,.0f}",
             f"{SEMIANALYSIS_DGX_H100_USD:,} (SemiAnalysis DGX H100)",
             f"{cost.server_price_usd / SEMIANALYSIS_DGX_H100_USD - 1:+.1%}"),
            ("USD per device-hour", f"{cost.usd_per_hour / 8:.2f}",
             f"{spec.price_usd_per_hour:.2f} (cloud list, RunPod)",
             f"{cost.usd_per_hour / 8 / spec.price_usd_per_hour:.2f}x")]
    return table(["", "H100 row (derived)", "H100-SXM (spec / public)", "difference"], rows)


BATCHES = [("prefill 1 x 512", Batch((512,))), ("prefill 1 x 2048", Batch((2048,))),
           ("prefill 4 x 1024", Batch((1024,) * 4)), ("prefill 8 x 2048", Batch((2048,) * 8)),
           ("decode 8 x 1024", Batch(decode_context=(1024,) * 8)),
           ("decode 32 x 1024", Batch(decode_context=(1024,) * 32)),
           ("decode 128 x 512", Batch(decode_context=(512,) * 128)),
           ("decode 64 x 2000", Batch(decode_context=(2000,) * 64))]


def iteration_table() -> tuple[str, float]:
    cost = CostModel(load_calibration("measured"))
    d = parse_row(H100_PREFILL_ROW).design
    ld = Layout.uniform(designed_device(d), tp=8, link=d.link_spec())
    lh = Layout.uniform(load_device("H100-SXM"), tp=8, link=load_link("NVLink4"))
    rows, worst = [], 0.0
    for name in ("llama-2-70b", "gpt-3-175b"):
        model = model_preset(name)
        for label, batch in BATCHES:
            td = cost.iteration(model, ld, batch).time_s
            th = cost.iteration(model, lh, batch).time_s
            worst = max(worst, abs(td / th - 1))
            rows.append((model.name, label, f"{td * 1e3:.2f}", f"{th * 1e3:.2f}",
                         f"{td / th - 1:+.1%}"))
    return table(["model (TP 8)", "batch", "H100 row, tile model (ms)",
                  "H100-SXM spec, measured kernels (ms)", "difference"], rows), worst


def overhead_table() -> str:
    tables = load_tables(ROOT / "hwspecs" / "calibration" / "H100-SXM")
    spec = load_device("H100-SXM")
    bw, peak = spec.mem_bw_bytes_per_s * DRAM_EFFICIENCY, spec.peak_flops_for("bf16")
    rows = []
    for op in ("gemm", "attn_prefill", "attn_decode", "elementwise"):
        df = tables[op][1]
        if "dtype" in df:
            df = df[df.dtype == "bf16"]
        df = df[(df.bytes / bw > 3 * df.flops / peak) & (df.bytes < 64e6)]
        a = np.vstack([np.ones(len(df)), df.bytes.values / bw]).T
        (icept, slope), *_ = np.linalg.lstsq(a, df.time_s.values, rcond=None)
        rows.append((op, len(df), f"{icept * 1e6:.2f}", f"{slope:.2f}"))
    return table(["kernel class", "memory-bound rows < 64 MB", "intercept (us)",
                  "slope vs bytes / (0.91 x 3.35 TB/s)"], rows)


def _trace_and_model():
    exp = load_experiment(ROOT / "experiments" / "llmshare_h100.toml")
    return exp.trace, exp.model


def capacity(design, trace, model, lo=20.45, hi_cap=640.0) -> float:
    """Highest rate (requests/s) at which the rescaled trace keeps 90% within the SLOs."""
    from simcluster.workload import rescale_rate

    def ok(rate):
        ev = evaluate_design(design, rescale_rate(trace, rate), model, ttft_slo_s=SLO[0],
                             tpot_slo_s=SLO[1])
        return ev.feasible and ev.slo_attainment >= 0.9
    if not ok(lo):
        return float("nan")
    hi = lo * 2
    while hi <= hi_cap and ok(hi):
        lo, hi = hi, hi * 2
    if hi > hi_cap:
        return lo
    for _ in range(4):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo


def comparison_table(skip_capacity: bool) -> str:
    results = {}
    for key, path in (("H100 cluster", "llmshare_h100.toml"),
                      ("LLMShare design", "llmshare_design.toml")):
        exp = load_experiment(ROOT / "experiments" / path)
        sim = exp.simulation()
        s = sim.run().summary()
        rows = [p for p in (H100_PREFILL_ROW, H100_DECODE_ROW) if key == "H100 cluster"] or \
            [LLMSHARE_PREFILL_ROW, LLMSHARE_DECODE_ROW]
        design = ServingDesign(parse_row(rows[0]), parse_row(rows[1]))
        capex = sum(p.servers * design_cost(p.design).server_price_usd
                    for p in (design.prefill, design.decode))
        per_hour = sum(p.servers * design_cost(p.design).usd_per_hour
                       for p in (design.prefill, design.decode))
        cap = float("nan") if skip_capacity else capacity(design, exp.trace, exp.model)
        moves = sum(1 for m in sim.cluster.moves if m[4] == "ready")
        results[key] = dict(capex=capex, per_hour=per_hour, run_cost=s["cost_usd"],
                            rps=s["finished"] / s["span_s"], span=s["span_s"], cap=cap,
                            energy=s["energy_kwh"], ttft=s["ttft_p90_s"], tpot=s["tpot_p90_s"],
                            moves=moves, rejected=s["rejected"])
    h, d = results["H100 cluster"], results["LLMShare design"]
    rows = [("capex (servers' price), USD", f"{h['capex']:,.0f}", f"{d['capex']:,.0f}",
             f"{d['capex'] / h['capex']:.2f}", f"{SOURCE_COST} (cost)"),
            ("USD per hour (own, colocate, power)", f"{h['per_hour']:.1f}",
             f"{d['per_hour']:.1f}", f"{d['per_hour'] / h['per_hour']:.2f}", ""),
            ("requests / s on the source's trace", f"{h['rps']:.2f}", f"{d['rps']:.2f}",
             f"{d['rps'] / h['rps']:.2f}", f"{SOURCE_RPS} (RPS)"),
            ("capacity: requests / s at 90% SLO", f"{h['cap']:.1f}", f"{d['cap']:.1f}",
             f"{d['cap'] / h['cap']:.2f}", f"{SOURCE_RPS} (RPS)"),
            ("serving time of the trace, s", f"{h['span']:.1f}", f"{d['span']:.1f}",
             f"{d['span'] / h['span']:.2f}", ""),
            ("TTFT p90 / TPOT p90, ms", f"{h['ttft'] * 1e3:.0f} / {h['tpot'] * 1e3:.1f}",
             f"{d['ttft'] * 1e3:.0f} / {d['tpot'] * 1e3:.1f}", "", ""),
            ("device energy of the run, kWh", f"{h['energy']:.2f}", f"{d['energy']:.2f}",
             f"{d['energy'] / h['energy']:.2f}", ""),
            ("servers moved by the rebalancer / rejected", f"{h['moves']} / {h['rejected']}",
             f"{d['moves']} / {d['rejected']}", "", "")]
    return table(["", "H100 cluster", "LLMShare design", "design / H100", "source"], rows)


def seconds_per_design(n: int, seed: int = 0) -> str:
    trace, model = _trace_and_model()
    rng = np.random.default_rng(seed)

    def draw() -> PoolDesign:
        v = {k: int(rng.choice(vals)) for k, vals in DESIGN_SPACE.items()}
        servers = v.pop("servers")
        return PoolDesign(servers, AcceleratorDesign(**v))
    times, simulated = [], []
    for _ in range(n):
        design = ServingDesign(draw(), draw())
        t0 = time.perf_counter()
        ev = evaluate_design(design, trace, model)
        times.append(time.perf_counter() - t0)
        if ev.feasible:
            simulated.append(times[-1])
    sim = sorted(simulated) or [float("nan")]
    return table(["designs drawn", "simulated (feasible)", "median s / simulated design",
                  "p90 s / simulated design", "median s / design, all", "total s"],
                 [(n, len(simulated), f"{statistics.median(sim):.2f}",
                   f"{sim[int(0.9 * (len(sim) - 1))]:.2f}",
                   f"{statistics.median(times):.2f}", f"{sum(times):.1f}")])


def write(blocks: dict[str, str]):
    from docblocks import write_block
    for name, body in blocks.items():
        write_block(DOC.name, name, body, fenced=False)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help="update docs/llmshare.md")
    ap.add_argument("--skip-capacity", action="store_true")
    ap.add_argument("--designs", type=int, default=20, help="designs timed (0: skip)")
    args = ap.parse_args(argv)
    blocks = {"peaks": peaks_table()}
    blocks["iterations"], worst = iteration_table()
    blocks["overheads"] = overhead_table()
    blocks["comparison"] = comparison_table(args.skip_capacity)
    if args.designs:
        blocks["speed"] = seconds_per_design(args.designs)
    for name, body in blocks.items():
        print(f"## {name}\n{body}\n")
    print(f"largest iteration-time difference: {worst:.1%}")
    if args.write:
        write(blocks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
