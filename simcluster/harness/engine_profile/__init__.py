"""On-device profiler and trace-replay driver for a real serving engine.

``cd simcluster/harness && python -m engine_profile {probe,profile,replay,all} --out DIR``
runs Hugging Face transformers' continuous-batching engine (``model.init_continuous_batching``,
FIFO scheduler, paged KV cache, ``paged|sdpa`` attention) on the local GPU, serving a model of
Llama-2-7B *shape* with random weights built from a config (nothing is downloaded), with EOS
disabled so that every request generates exactly its requested output length.

* ``profile`` submits controlled synthetic batches (prefill token counts, decoding sequences,
  contexts) and writes one row per engine iteration in the per-iteration CSV format that
  ``simcluster calibrate-engine`` fits (``hwspecs/engines/README.md``).
* ``replay`` submits the requests of a trace slice at their arrival times (optionally rescaled
  to a target rate) and writes one row per request: arrival, prompt and output tokens, measured
  TTFT, TPOT and end-to-end latency; plus the iterations it ran.

Like :mod:`simcluster.harness.kernels`, this package imports nothing from the rest of
simcluster and imports torch and transformers only when a command runs, so the lent GPU
machines (which lack the simulator's dependencies) can run it from a copy of the tree:
``cd simcluster/harness && python -m engine_profile ...``. The simulator never needs it.
"""

from .hf_cb import ENGINE_NAME  # noqa: F401


def main(argv=None) -> int:
    from .__main__ import main as _main
    return _main(argv)
