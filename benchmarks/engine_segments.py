"""Write the trace segments replayed on the H200 (``hwspecs/engines/h200-segments/``).

    python benchmarks/engine_segments.py [--out hwspecs/engines/h200-segments]

Segments of the bundled Azure LLM inference 2023 traces (conversation and code), cut at two
points of the hour (600 s and 2400 s in) so that the moderate and the overloaded replays of
one trace serve different requests. Per model context (4096 tokens for Llama-2-7B, 8192 for
the Llama-3-8B shape) requests with ``prompt + output`` over the context less 96 tokens are
dropped, and outputs are capped at 192 tokens so that a replay of a few dozen requests ends in
well under a minute of device time (the cap is in every file's header; the simulator replays
the same requests). The replay driver rescales the arrival times to the replay's rate.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from simcluster.workload import load_trace  # noqa: E402

OUTPUT_CAP = 192
KEEP = 48
SEGMENTS = {   # name -> (bundled trace, start offset s, context)
    "conv-a": ("azure-conv", 600.0, 4096), "conv-b": ("azure-conv", 2400.0, 4096),
    "code-a": ("azure-code", 600.0, 4096), "code-b": ("azure-code", 2400.0, 4096),
    "conv-a8k": ("azure-conv", 600.0, 8192), "conv-b8k": ("azure-conv", 2400.0, 8192),
    "code-a8k": ("azure-code", 600.0, 8192), "code-b8k": ("azure-code", 2400.0, 8192),
}


def segment(trace: str, start_s: float, context: int):
    t = load_trace(trace)
    a = np.asarray(t.arrival_s, float)
    a = a - a.min()
    p = np.asarray(t.prompt_tokens)
    o = np.minimum(np.asarray(t.output_tokens), OUTPUT_CAP)
    keep = (a >= start_s) & (p + o <= context - 96)
    idx = np.flatnonzero(keep)[:KEEP]
    return a[idx] - a[idx[0]], p[idx], o[idx]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "hwspecs" / "engines" / "h200-segments"))
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, (trace, start, ctx) in SEGMENTS.items():
        arr, p, o = segment(trace, start, ctx)
        lines = [f"# source: bundled trace {trace} (Azure LLM inference 2023), requests "
                 f"arriving from {start:.0f} s into the hour",
                 f"# filter: prompt_tokens + output_tokens <= {ctx - 96} (context {ctx}); "
                 f"output_tokens capped at {OUTPUT_CAP}; the first {KEEP} kept; arrivals "
                 "shifted to start at 0 (the replay rescales them to its rate)",
                 "arrival_s,prompt_tokens,output_tokens"]
        lines += [f"{x:.6f},{int(q)},{int(r)}" for x, q, r in zip(arr, p, o)]
        (out / f"{name}.csv").write_text("\n".join(lines) + "\n")
        print(f"{name}: {len(arr)} requests, prompt mean {p.mean():.0f} max {p.max()}, "
              f"output mean {o.mean():.0f}, native rate {len(arr) / max(arr[-1], 1e-9):.2f}/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
