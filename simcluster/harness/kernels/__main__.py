"""Command line of the calibration micro-benchmarks.

    python -m simcluster.harness.kernels --out DIR [--quick] [--only gemm,attn_decode,...]

Writes ``DIR/<table>.csv`` for each table run and ``DIR/bench.log``, then prints the key
figures. A table that fails is logged and skipped; the others still run (exit status 1).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback

from .common import (TABLES, CalibrationDependencyError, base_metadata, cpu_info, gpu_metadata, log,
                     nvidia_smi, open_log, require_torch, write_table)
from .summary import summary_lines


def parse_only(text: str | None) -> list[str] | None:
    """The table names of ``--only`` (comma-separated), checked against :data:`TABLES`."""
    if text is None:
        return None
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in TABLES]
    if unknown or not names:
        raise ValueError(f"unknown table(s) {unknown or text!r}; known: {', '.join(TABLES)}")
    return names


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m simcluster.harness.kernels",
                                description="Kernel micro-benchmarks for the roofline cost model.")
    p.add_argument("--out", required=True, help="folder for the CSV tables and bench.log")
    p.add_argument("--quick", action="store_true",
                   help="a reduced grid (a smoke test: under 30 s on a CUDA machine)")
    p.add_argument("--only", help="comma-separated tables to run; known: " + ", ".join(TABLES))
    p.add_argument("--cpu-dry-run", action="store_true",
                   help="run the GPU tables' code on the CPU with tiny shapes and host clocks "
                        "(checks the code paths on a machine without a GPU; calibrates nothing)")
    return p


def select_tables(only: list[str] | None, *, has_cuda: bool, gpu_count: int) -> list[str]:
    """Tables to run: ``only`` if given (checked against what this machine has), else every
    table this machine can run (GPU tables need CUDA, all-reduce at least two GPUs). The
    held-out validation table runs only when named: it belongs to a separate run."""
    def runnable(name):
        kind = TABLES[name][2]
        return kind == "cpu" or (kind in ("gpu", "gpu_heldout") and has_cuda) or (
            kind == "multi_gpu" and gpu_count > 1)
    if only is not None:
        bad = [n for n in only if not runnable(n)]
        if bad:
            raise RuntimeError(f"this machine cannot run {bad} (CUDA: {has_cuda}, GPUs: {gpu_count})")
        return only
    return [n for n in TABLES if runnable(n) and TABLES[n][2] != "gpu_heldout"]


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    only = parse_only(args.only)
    torch = require_torch()
    os.makedirs(args.out, exist_ok=True)
    open_log(os.path.join(args.out, "bench.log"))
    has_cuda = torch.cuda.is_available()
    if args.cpu_dry_run:
        from . import modes
        modes.set_device("cpu")
        args.quick, has_cuda = True, True      # GPU tables run, on tiny shapes, on the CPU
    gpu_count = torch.cuda.device_count() if has_cuda else 0
    names = select_tables(only, has_cuda=has_cuda, gpu_count=gpu_count)
    log(f"tables: {', '.join(names)} (quick={args.quick}); torch {torch.__version__}, "
        f"CUDA {torch.version.cuda}, GPUs {gpu_count}")
    gpu_name = ""
    if has_cuda and not args.cpu_dry_run:
        gpu_name = torch.cuda.get_device_name(0)
        a = torch.randn(64, 64, device="cuda", dtype=torch.bfloat16)
        (a @ a).sum().item()  # loads cuBLAS so that its version can be read
    failed = []
    for name in names:
        mod_name, fn_name, kind = TABLES[name]
        t0 = time.perf_counter()
        log(f"{name}: start")
        md = base_metadata(name, quick=args.quick, argv=argv)
        try:
            if args.cpu_dry_run:
                md.update(cpu_info(), dry_run="true (CPU stand-in: calibrates nothing)")
            elif kind in ("gpu", "multi_gpu", "gpu_heldout"):
                md.update(gpu_metadata(torch))
            else:
                md.update(cpu_info())
                if gpu_name:
                    md["gpu_on_host"] = gpu_name
            fn = getattr(importlib.import_module(f".{mod_name}", __package__), fn_name)
            table = fn(torch, quick=args.quick)
            md.update(table.metadata)
            if kind != "cpu" and not args.cpu_dry_run:
                md.update({k + "_after": v for k, v in nvidia_smi(0).items()
                           if k.startswith("nvsmi_clocks")})
            path = os.path.join(args.out, f"{table.name}.csv")
            n = write_table(path, table.columns, table.rows, md)
            log(f"{name}: {n} rows in {time.perf_counter() - t0:.1f} s -> {path}")
        except CalibrationDependencyError:
            raise
        except Exception:  # noqa: BLE001 -- one failed table must not lose the others
            failed.append(name)
            log(f"{name}: FAILED after {time.perf_counter() - t0:.1f} s\n{traceback.format_exc()}")
            if has_cuda and not args.cpu_dry_run:
                try:
                    torch.cuda.synchronize()
                    torch.cuda.empty_cache()
                except Exception:  # noqa: BLE001 -- the context is broken: stop here
                    log("CUDA context unusable after the failure; stopping")
                    break
    log("summary:")
    for line in summary_lines(args.out):
        log("  " + line)
    if failed:
        log(f"failed tables: {', '.join(failed)}")
    open_log(None)
    return 1 if failed else 0


def _cli() -> int:
    try:
        return main()
    except (CalibrationDependencyError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(_cli())
