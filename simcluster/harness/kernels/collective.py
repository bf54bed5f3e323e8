"""Collective micro-benchmark: bf16 all-reduce over every GPU of one host, through NCCL.

One process per GPU (``torch.multiprocessing.spawn``). NVLink multicast (NVLS) stays off:
``NCCL_NVLS_ENABLE=0``, ``TORCH_SYMM_MEM_DISABLE_MULTICAST=1`` and ``NVSHMEM_DISABLE_NVLS=1``
are forced in the parent and in every worker before NCCL starts, because a program that uses
multicast can put a shared host's GPUs out of service.

Timing: for each size and sample, the ranks meet at a barrier, each times a block of ``k``
back-to-back all-reduces with CUDA events, and the sample is the slowest rank's block time
divided by ``k`` (the collective ends when its last rank ends). Buffers are refilled with random
normal values before each sample (outside the timed block), so sums never overflow.
"""

from __future__ import annotations

import json
import math
import os
import socket
import tempfile

from .common import Table, TIMING_COLUMNS, gpu_metadata, log, log_spaced_pow2, nvidia_topology, \
    summarize

NO_MULTICAST_ENV = {
    "NCCL_NVLS_ENABLE": "0",
    "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
    "NVSHMEM_DISABLE_NVLS": "1",
}

ALLREDUCE_SIZES = tuple(log_spaced_pow2(2 ** 12, 2 ** 30))  # 4 KiB .. 1 GiB
QUICK_ALLREDUCE_SIZES = (2 ** 12, 2 ** 20, 2 ** 26)


def force_no_multicast(environ=os.environ) -> None:
    """Sets the variables that keep NVLink multicast off (overriding any other value)."""
    environ.update(NO_MULTICAST_ENV)


def bus_bandwidth(algbw: float, world: int) -> float:
    """nccl-tests' bus bandwidth of an all-reduce: algbw * 2(n-1)/n."""
    return algbw * 2 * (world - 1) / world


def block_size(size_bytes: int) -> int:
    """All-reduces per timed block: enough that a block lasts about a millisecond (a function of
    the size alone, so that every rank runs the same count)."""
    est = 15e-6 + size_bytes / 100e9
    return max(1, min(200, math.ceil(1e-3 / est)))


def _worker(rank: int, world: int, port: int, sizes, samples: int, result_path: str) -> None:
    force_no_multicast()
    import torch
    import torch.distributed as dist
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.cuda.set_device(rank)
    dev = torch.device("cuda", rank)
    dist.init_process_group("nccl", rank=rank, world_size=world, device_id=dev)
    try:
        x = torch.full((4096,), float(rank + 1), device=dev, dtype=torch.bfloat16)
        dist.all_reduce(x)
        ok = bool((x == world * (world + 1) / 2).all())
        results = []
        for size in sizes:
            buf = torch.empty(size // 2, device=dev, dtype=torch.bfloat16)
            buf.normal_()
            for _ in range(3):
                dist.all_reduce(buf)
            torch.cuda.synchronize()
            k = block_size(size)
            times = []
            for _ in range(samples):
                buf.normal_()
                dist.barrier(device_ids=[rank])
                torch.cuda.synchronize()
                s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                s.record()
                for _ in range(k):
                    dist.all_reduce(buf)
                e.record()
                e.synchronize()
                times.append(s.elapsed_time(e) * 1e-3 / k)
            t = torch.tensor(times, device=dev, dtype=torch.float64)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            results.append({"size_bytes": size, "block": k, "times": t.tolist()})
            del buf
        if rank == 0:
            with open(result_path, "w") as fh:
                json.dump({"sum_check_ok": ok, "results": results}, fh)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_allreduce(torch, *, quick: bool = False) -> Table:
    """bf16 all-reduce over all GPUs of this host, 4 KiB .. 1 GiB."""
    force_no_multicast()
    import torch.multiprocessing as mp
    world = torch.cuda.device_count()
    if world < 2:
        raise RuntimeError(f"all-reduce needs at least 2 GPUs; this host has {world}")
    sizes = QUICK_ALLREDUCE_SIZES if quick else ALLREDUCE_SIZES
    samples = 5 if quick else 20
    cols = ["world_size", "size_bytes", "dtype", *TIMING_COLUMNS, "algbw_bytes_per_s",
            "busbw_bytes_per_s", "block"]
    md = gpu_metadata(torch)
    md["device_slug"] = f"{md['device_slug']}-x{world}"
    md.update({
        "op": "torch.distributed.all_reduce(SUM) over NCCL, one process per GPU",
        "flops_formula": "(world_size-1)*size_bytes/2 (the additions)",
        "bytes_formula": "size_bytes (the buffer; algbw = size_bytes/time_s)",
        "busbw_formula": "algbw * 2*(world_size-1)/world_size",
        "timing_note": "per sample: barrier, then a block of `block` all-reduces between CUDA "
                       "events; slowest rank's block time / block",
        "nvidia_topology": nvidia_topology() or "",
        **{k.lower(): v for k, v in NO_MULTICAST_ENV.items()},
    })
    table = Table("allreduce", cols, metadata=md)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "allreduce.json")
        mp.spawn(_worker, args=(world, _free_port(), list(sizes), samples, path), nprocs=world,
                 join=True)
        with open(path) as fh:
            res = json.load(fh)
    table.metadata["sum_check_ok"] = res["sum_check_ok"]
    if not res["sum_check_ok"]:
        log("  all-reduce sum check FAILED")
    for r in res["results"]:
        s = summarize(r["times"])
        algbw = r["size_bytes"] / s["time_s"]
        table.add(world_size=world, size_bytes=r["size_bytes"], dtype="bf16",
                  flops=(world - 1) * r["size_bytes"] // 2, bytes=r["size_bytes"],
                  algbw_bytes_per_s=algbw, busbw_bytes_per_s=bus_bandwidth(algbw, world),
                  block=r["block"], **s)
    return table
