"""Kernel micro-benchmarks that calibrate simcluster's roofline cost model.

``python -m simcluster.calibration.bench --out DIR [--quick] [--only gemm,attn_decode,...]``
measures the tables named in :data:`TABLES` on this machine's GPU(s) and host CPU and writes one
CSV per table (format: :mod:`simcluster.calibration.bench.common`; columns and units:
``hwspecs/calibration/README.md``).

Importing this package needs neither torch nor a GPU; running the benchmarks needs torch
(``pip install "simcluster[calibrate]"``), imported only when a benchmark starts.
"""

from .common import (CalibrationDependencyError, TIMING_COLUMNS, read_table, summary_lines,
                     write_table)

#: Table name -> (module, function, where it runs). Measuring order: the two ceilings first.
TABLES = {
    "memcpy": ("gpu", "bench_memcpy", "gpu"),
    "gemm": ("gpu", "bench_gemm", "gpu"),
    "elementwise": ("gpu", "bench_elementwise", "gpu"),
    "attn_prefill": ("gpu", "bench_attn_prefill", "gpu"),
    "attn_decode": ("gpu", "bench_attn_decode", "gpu"),
    "cpu_gemm": ("cpu", "bench_cpu_gemm", "cpu"),
    "cpu_attn_decode": ("cpu", "bench_cpu_attn_decode", "cpu"),
    "allreduce": ("collective", "bench_allreduce", "multi_gpu"),
}

__all__ = ["TABLES", "TIMING_COLUMNS", "CalibrationDependencyError", "read_table", "write_table",
           "summary_lines", "main"]


def main(argv=None) -> int:
    """Runs the suite (see ``python -m simcluster.calibration.bench --help``)."""
    from .__main__ import main as _main
    return _main(argv)
