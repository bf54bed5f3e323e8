"""``python -m engine_profile`` (from simcluster/harness): profile and replay the engine.

    probe   --out DIR [--trace CSV --burst N --rate R]  small sweep, a burst, a short replay
    profile --out DIR [--budget-s S]           synthetic profiling sweep -> profile.csv
    replay  --out DIR --trace CSV --rate R --name NAME [--max-requests N]
    all     --out DIR --trace CSV --burst N --replay NAME:RATE:N[:CSV] ... [--profile-budget-s S]
            (RATE "x0.5" = half the burst's throughput; N "s90" = the requests of 90 s)

Every file is written as soon as its phase ends (and the profile after every group), so a run
stopped at a time limit still leaves what it measured.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from .hf_cb import (ITERATION_COLUMNS, REQUEST_COLUMNS, EngineSettings, Submission,
                    build_engine, metadata, read_requests, rescale, run_requests,
                    serving_sweep, sweep, write_csv)


def _summary(rows, label):
    import numpy as np
    if not rows:
        print(f"  {label}: no iterations", flush=True)
        return
    t = np.array([r["iteration_s"] for r in rows])
    print(f"  {label}: {len(rows)} iterations, median {1e3 * np.median(t):.1f} ms, "
          f"p90 {1e3 * np.percentile(t, 90):.1f} ms, total {t.sum():.1f} s", flush=True)


def _warmup(manager, log):
    subs = ([Submission(0.0, 512, 8) for _ in range(4)] + [Submission(0.0, 2048, 2)]
            + [Submission(0.0, 16, 8) for _ in range(64)])
    run_requests(manager, log, subs, "warmup", seed=99)


def _profile(manager, log, settings, out, budget_s, quick, meta, kind="grid"):
    path = os.path.join(out, "profile.csv" if kind == "grid" else f"profile-{kind}.csv")
    t0, rows = time.perf_counter(), []
    groups = (sweep if kind == "grid" else serving_sweep)(settings, quick=quick)
    meta = {**meta, "sweep": kind}
    for g in groups:
        if time.perf_counter() - t0 > budget_s:
            print(f"  profile budget {budget_s:.0f}s reached; stopping before {g.name}",
                  flush=True)
            break
        run_requests(manager, log, list(g.subs), g.name, deadline_s=120)
        got = log.take(g.name)
        rows += got
        _summary(got, g.name)
        write_csv(path, rows, ITERATION_COLUMNS, {**meta, "kind": "synthetic profile"})
    print(f"profile: {len(rows)} iterations in {time.perf_counter() - t0:.0f}s -> {path}",
          flush=True)
    return rows


def _replay(manager, log, settings, out, trace, rate, n, name, meta, deadline_s):
    subs = rescale(read_requests(trace), rate, n)
    span = subs[-1].arrival_s if subs else 0.0
    print(f"replay {name}: {len(subs)} requests over {span:.1f}s "
          f"({rate} req/s), from {trace}", flush=True)
    t0 = time.perf_counter()
    rows = run_requests(manager, log, subs, f"replay-{name}", seed=7, deadline_s=deadline_s)
    its = log.take(f"replay-{name}")
    m = {**meta, "kind": f"trace replay {name}", "trace": os.path.basename(trace),
         "rate_per_s": rate, "requests": len(subs), "arrival_span_s": f"{span:.3f}",
         "wall_s": f"{time.perf_counter() - t0:.1f}"}
    write_csv(os.path.join(out, f"replay-{name}.csv"), rows, REQUEST_COLUMNS, m)
    write_csv(os.path.join(out, f"replay-{name}-iterations.csv"), its, ITERATION_COLUMNS, m)
    import numpy as np
    ttft = np.array([r["ttft_s"] for r in rows], dtype=float)
    tpot = np.array([r["tpot_s"] for r in rows], dtype=float)
    e2e = np.array([r["e2e_s"] for r in rows], dtype=float)
    fin = np.array([r["finish_s"] for r in rows], dtype=float)
    print(f"  {name}: finished {np.isfinite(e2e).sum()}/{len(rows)}, "
          f"resets {sum(r['soft_resets'] for r in rows)}, "
          f"TTFT p50 {np.nanmedian(ttft):.3f}s p90 {np.nanpercentile(ttft, 90):.3f}s; "
          f"TPOT p50 {1e3 * np.nanmedian(tpot):.1f}ms; E2E p50 {np.nanmedian(e2e):.2f}s; "
          f"last finish {np.nanmax(fin):.1f}s", flush=True)
    _summary(its, f"replay-{name} iterations")
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="engine_profile", description=__doc__.split("\n\n")[0])
    p.add_argument("cmd", choices=["probe", "profile", "replay", "all"])
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--trace", help="trace slice CSV: arrival_s, prompt_tokens, output_tokens")
    p.add_argument("--rate", type=float, help="replay: rescale arrivals to this rate")
    p.add_argument("--max-requests", type=int, default=None)
    p.add_argument("--name", default="replay")
    p.add_argument("--replay", action="append", default=[],
                   help="all: NAME:RATE:N[:TRACE_CSV] (repeatable)")
    p.add_argument("--profile-budget-s", type=float, default=240.0)
    p.add_argument("--replay-deadline-s", type=float, default=240.0)
    p.add_argument("--quick", action="store_true", help="a small sweep (smoke test)")
    p.add_argument("--sweep", default="grid",
                   help="profile sweeps to run, comma-separated: grid (back-to-back synthetic "
                        "batches), serving (prompts injected into decode backgrounds)")
    p.add_argument("--burst", type=int, default=0,
                   help="probe/all: first submit this many requests of --trace at once")
    p.add_argument("--total-budget-s", type=float, default=560.0,
                   help="all: replays get what is left of this, shared out")
    p.add_argument("--num-blocks", type=int, default=None)
    p.add_argument("--tiny", action="store_true", help="a 2-layer toy model (CPU tests)")
    a = p.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    settings = EngineSettings()
    if a.tiny:
        settings = EngineSettings(hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=4, vocab_size=1000,
                                  block_size=32, num_blocks=512, max_batch_tokens=256,
                                  max_requests_per_batch=32)
    if a.num_blocks:
        settings = EngineSettings(**{**settings.__dict__, "num_blocks": a.num_blocks})
    t0 = time.perf_counter()
    model, manager, log = build_engine(settings, device=a.device)
    meta = metadata(settings, {"t0_unix": f"{log.t0_unix:.3f}"})
    print(f"engine up in {time.perf_counter() - t0:.1f}s: {meta['device_name']}, "
          f"{meta['engine_version']}, torch {meta['torch']}", flush=True)
    try:
        t1 = time.perf_counter()
        _warmup(manager, log)
        _summary(log.take("warmup"), "warmup")
        if not log.take("warmup"):
            raise SystemExit("the engine ran no iteration in the warm-up: see its log above")
        print(f"warmup {time.perf_counter() - t1:.1f}s", flush=True)
        if a.cmd in ("probe", "profile", "all"):
            budget = 60.0 if a.cmd == "probe" else a.profile_budget_s
            for kind in a.sweep.split(","):
                _profile(manager, log, settings, a.out, budget, a.quick or a.cmd == "probe",
                         meta, kind)
        capacity = None
        if a.cmd in ("probe", "all") and a.trace and a.burst:
            # a saturation burst: the first requests of the slice all at once; its throughput
            # is the engine's capacity on this workload (replay rates may be given relative to it)
            subs = [Submission(0.0, s.prompt_tokens, s.output_tokens)
                    for s in read_requests(a.trace)[:a.burst]]
            t = time.perf_counter()
            rows = run_requests(manager, log, subs, "replay-burst", deadline_s=150)
            done = [r["finish_s"] for r in rows if r["finish_s"] == r["finish_s"]]
            wall = max(done) if done else float("nan")
            m = {**meta, "kind": "trace replay burst (all requests at t=0)",
                 "trace": os.path.basename(a.trace), "rate_per_s": "inf",
                 "requests": len(subs), "arrival_span_s": "0",
                 "wall_s": f"{time.perf_counter() - t:.1f}"}
            write_csv(os.path.join(a.out, "replay-burst.csv"), rows, REQUEST_COLUMNS, m)
            write_csv(os.path.join(a.out, "replay-burst-iterations.csv"),
                      log.take("replay-burst"), ITERATION_COLUMNS, m)
            _summary(log.take("replay-burst"), "burst")
            capacity = len(done) / wall if done else 2.0
            print(f"burst: {len(subs)} requests done in {wall:.1f}s = {capacity:.2f} req/s "
                  f"at saturation", flush=True)
        if a.cmd == "probe" and a.trace and a.rate:
            _replay(manager, log, settings, a.out, a.trace, a.rate, a.max_requests or 30,
                    a.name, meta, a.replay_deadline_s)
        if a.cmd == "replay":
            _replay(manager, log, settings, a.out, a.trace, a.rate, a.max_requests, a.name,
                    meta, a.replay_deadline_s)
        if a.cmd == "all":
            for k, spec in enumerate(a.replay):
                name, rate, n, *trace = spec.split(":")
                # RATE "x0.5": half the burst's capacity; N "s90": as many as arrive in 90 s
                rate = (float(rate[1:]) * capacity if rate.startswith("x") else float(rate))
                n = int(round(float(n[1:]) * rate)) + 1 if n.startswith("s") else int(n)
                left = a.total_budget_s - (time.perf_counter() - t0)
                deadline = left / (len(a.replay) - k) if k < len(a.replay) - 1 else left - 15
                _replay(manager, log, settings, a.out, trace[0] if trace else a.trace,
                        round(rate, 3), n, name, meta, max(deadline, 10.0))
    finally:
        manager.stop(block=True, timeout=10, hard_stop=True)
    print(f"total {time.perf_counter() - t0:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
