"""Link calibration: all-reduce and host-transfer efficiency from measured tables."""

from __future__ import annotations

import numpy as np

from simcluster.calibration.tables import load_tables


def fit_links(folders) -> dict:
    """(link kind, op) -> (bandwidth efficiency vs the link spec, latency floor s).

    ``allreduce.csv`` (NCCL over NVLink between two GPUs of one host) gives the all-reduce's
    asymptotic bus bandwidth (slope over messages >= 64 MiB) and its small-message floor (the
    median of messages <= 1 MiB). The floor was measured at two ranks and is used for any rank
    count (NCCL's small-message algorithms are not rings). ``memcpy.csv`` pinned host<->device
    copies give PCIe ``transfer`` efficiency the same way. The spec links these are relative to:
    NVLink4 for an H100/H200 pair, PCIe5 for those hosts.
    """
    from simcluster.hardware import load_link
    out = {}
    for name, folder in folders.items():
        tables = load_tables(folder)
        if "allreduce" in tables and ("nvlink", "collective") not in out:
            df = tables["allreduce"][1]
            df = df[df.world_size == 2]
            big = df[df.size_bytes >= 64 * 2**20]
            if len(big) >= 2:
                slope = np.polyfit(big.size_bytes, big.time_s, 1)[0]   # s per byte, n=2
                floor = float(df[df.size_bytes <= 2**20].time_s.median())
                out[("nvlink", "collective")] = (1.0 / slope / load_link("NVLink4").bw_bytes_per_s,
                                                 floor)
        if "memcpy" in tables and ("pcie", "transfer") not in out:
            df = tables["memcpy"][1]
            df = df[df.direction.isin(["h2d", "d2h"]) & (df.pinned.astype(str).str.lower() == "true")]
            big = df[df.size_bytes >= 64 * 2**20]
            if len(big) >= 2:
                slope = np.polyfit(big.size_bytes, big.time_s, 1)[0]
                floor = float(df[df.size_bytes <= 4096].time_s.median())
                out[("pcie", "transfer")] = (1.0 / slope / load_link("PCIe5").bw_bytes_per_s,
                                             floor)
    return out
