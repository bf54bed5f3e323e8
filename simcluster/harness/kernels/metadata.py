"""Metadata of a measured table: the machine, its GPU and CPU, software versions, the date.

Split from :mod:`.common` (which re-exports these names). Nothing here imports torch at module
load; :func:`gpu_metadata` takes the ``torch`` module from a caller that already required it.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import shutil
import subprocess
from typing import Iterable

SUITE_VERSION = "3"   # 2: denser attention grids (sqrt(2) steps in length); 3: launch costs,
#                       GEMM layouts and non-power-of-two tokens, HF elementwise ops, held-out
#                       operators in graph/eager/isolated modes


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _run(cmd: list[str], timeout: float = 20.0) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


NVSMI_FIELDS = ("name", "driver_version", "memory.total", "clocks.sm", "clocks.mem",
                "clocks.max.sm", "clocks.max.mem", "power.limit", "pstate", "temperature.gpu")


def nvidia_smi(index: int = 0) -> dict:
    """A few fields of ``nvidia-smi --query-gpu`` for one GPU (empty where unreadable)."""
    out = _run(["nvidia-smi", f"--id={index}", "--query-gpu=" + ",".join(NVSMI_FIELDS),
                "--format=csv,noheader"])
    if not out:
        return {}
    vals = [v.strip() for v in out.splitlines()[0].split(",")]
    if len(vals) != len(NVSMI_FIELDS):
        return {}
    return {"nvsmi_" + k.replace(".", "_"): v for k, v in zip(NVSMI_FIELDS, vals)}


def nvidia_topology() -> str | None:
    """``nvidia-smi topo -m``'s GPU matrix, rows joined by ' | ' (how the GPUs are linked)."""
    out = _run(["nvidia-smi", "topo", "-m"])
    if not out:
        return None
    rows = [" ".join(line.split()) for line in out.splitlines()
            if line.strip().startswith(("GPU", "\tGPU")) or line.startswith("GPU")]
    return " | ".join(rows) if rows else None


def _cublas_version() -> str | None:
    """cuBLAS version of the library torch loaded in this process (after a first matmul)."""
    import ctypes
    try:
        with open("/proc/self/maps") as fh:
            paths = {line.split()[-1] for line in fh if "libcublas.so" in line}
    except OSError:
        return None
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
            parts = []
            for prop in (0, 1, 2):  # MAJOR_VERSION, MINOR_VERSION, PATCH_LEVEL
                v = ctypes.c_int()
                if lib.cublasGetProperty(prop, ctypes.byref(v)) != 0:
                    break
                parts.append(str(v.value))
            if len(parts) == 3:
                return ".".join(parts)
        except (OSError, AttributeError):
            continue
    return None


def device_slug(name: str, count: int = 1) -> str:
    """Folder name under ``hwspecs/calibration`` for a GPU name as CUDA reports it."""
    n = name.upper()
    if "H200" in n:
        base = "H200"
    elif "H100" in n:
        base = "H100-PCIE" if "PCIE" in n else "H100-SXM"
    else:
        base = re.sub(r"[^A-Za-z0-9]+", "-", name.replace("NVIDIA", "")).strip("-") or "GPU"
    return base if count <= 1 else f"{base}-x{count}"


def gpu_metadata(torch, index: int = 0) -> dict:
    """Device and software facts for a GPU table's header (no host name, no serials)."""
    p = torch.cuda.get_device_properties(index)
    md = {
        "device_name": p.name,
        "device_slug": device_slug(p.name),
        "device_count": torch.cuda.device_count(),
        "compute_capability": f"{p.major}.{p.minor}",
        "sm_count": p.multi_processor_count,
        "l2_cache_bytes": getattr(p, "L2_cache_size", ""),
        "memory_bytes": p.total_memory,
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "cudnn_version": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else "",
        "cublas_version": _cublas_version() or "",
        "bf16_reduced_precision_reduction":
            torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction,
    }
    try:
        md["preferred_blas_library"] = str(torch.backends.cuda.preferred_blas_library())
    except Exception:  # older torch
        pass
    try:
        md["nccl_version"] = ".".join(str(v) for v in torch.cuda.nccl.version())
    except Exception:
        pass
    md.update(nvidia_smi(index))
    return md


CPU_FLAGS_OF_INTEREST = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16",
                         "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")


def cpu_info() -> dict:
    """CPU model, core count, cache and the instruction-set flags that decide the GEMM path."""
    model, flags = "", set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name") and not model:
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        model = platform.processor()
    md = {
        "cpu_model": model,
        "cpu_count": os.cpu_count(),
        "cpu_flags_of_interest": " ".join(f for f in CPU_FLAGS_OF_INTEREST if f in flags) or "none",
    }
    try:
        md["cpu_affinity_count"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        pass
    llc = last_level_cache_bytes()
    if llc:
        md["llc_bytes"] = llc
    return md


def last_level_cache_bytes() -> int | None:
    """Size of the largest cache level that /sys reports for cpu0, in bytes."""
    base = "/sys/devices/system/cpu/cpu0/cache"
    best = None
    try:
        for entry in os.listdir(base):
            try:
                with open(os.path.join(base, entry, "size")) as fh:
                    s = fh.read().strip()
            except OSError:
                continue
            m = re.match(r"^(\d+)([KMG]?)$", s)
            if m:
                v = int(m.group(1)) * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[m.group(2)]
                best = max(best or 0, v)
    except OSError:
        return None
    return best


def base_metadata(table: str, *, quick: bool, argv: Iterable[str] = ()) -> dict:
    return {
        "table": table,
        "suite": "simcluster.harness.kernels",
        "suite_version": SUITE_VERSION,
        "date_utc": utc_now(),
        "quick": quick,
        "command": f"python -m {__package__ or 'simcluster.harness.kernels'} " + " ".join(argv),
        "python_version": platform.python_version(),
        "units": "SI: seconds, bytes, floating-point operations",
    }
