"""Kernel micro-benchmarks that calibrate simcluster's roofline cost model.

``python -m simcluster.harness.kernels --out DIR [--quick] [--only gemm,attn_decode,...]``
measures the tables named in :data:`TABLES` on this machine's GPU(s) and host CPU and writes one
CSV per table (format: :mod:`simcluster.harness.kernels.common`; columns and units:
``hwspecs/calibration/README.md``).

Importing this package needs neither torch nor a GPU; running the benchmarks needs torch
(``pip install "simcluster[calibrate]"``), imported only when a benchmark starts.
"""

from .common import TABLES, TIMING_COLUMNS, CalibrationDependencyError, read_table, write_table
from .summary import summary_lines

__all__ = ["TABLES", "TIMING_COLUMNS", "CalibrationDependencyError", "read_table", "write_table",
           "summary_lines", "main"]


def main(argv=None) -> int:
    """Runs the suite (see ``python -m simcluster.harness.kernels --help``)."""
    from .__main__ import main as _main
    return _main(argv)
