"""Reading another socket's memory: the iteration time of a CPU socket under NUMA.

A socket reads its own DRAM and another socket's (through the socket links) at rates set by
two spec values each: bandwidth (``mem_bw_bytes_per_s``, ``remote_mem_bw_bytes_per_s``) and
idle latency (``local_mem_latency_s``, ``remote_mem_latency_s``). Decode on a CPU is memory
bound — every step streams the weights and each sequence's KV — so placement decides its
speed (the placements themselves are policies: :mod:`simcluster.policies.numa`).

**Latency and bandwidth together** (:func:`memory_throughput`). A streaming socket keeps a
fixed number of cache-line misses in flight (its cores' fill buffers); by Little's law it
cannot read faster than ``lines x 64 B / latency`` however fast the memory, nor faster than the
memory (or link) bandwidth however many lines it has in flight. The exact throughput of that
closed loop — ``lines`` misses cycling through a latency delay and a bandwidth server — is a
mean-value analysis (MVA) of a two-station closed queueing network; it tends to the bandwidth
when lines x 64 B / latency is large and to the latency bound when it is small.
:func:`remote_penalty` is local over remote throughput: the factor by which every byte read
from the other socket costs more. Lines in flight = cores x :data:`LINES_PER_CORE`.

For the Xeon Gold 6148 (20 cores, ~197 lines) the local loop is bandwidth bound and so is the
remote one (UPI-bound at 50.7 GB/s, measured), so the penalty (2.52x) is nearly the bandwidth
ratio; latency takes over on sockets with fewer lines in flight or older parts whose remote
latency is several times local (the slides' "up to 7 times longer"). A what-if penalty can be
given instead (``RemoteMemory(inner, penalty=...)``; a placement's ``remote_penalty``).

The cost model stays pure. :class:`RemoteMemory` is a calibration that wraps another and charges
a CPU operator's bytes at the penalty (it scales the bytes, which for any roofline-form
calibration equals reading them at the remote rate). :class:`NumaTimer` blends an instance's
all-local and all-remote iteration times by the fraction of weight bytes and of KV bytes that
are remote: ``t = (1 - f_w) base_local + f_w base_remote + (1 - f_kv) attn_local + f_kv
attn_remote``, where ``attn`` is the decode-attention part (the time's growth with KV context)
and ``base`` the rest. ``f_kv`` is fixed, or — for KV spilled to another socket once the local
room (``kv_local_tokens``) is full — the share of the step's KV tokens beyond that room (local
blocks are used first). Exact when each part is memory bound (decode on a CPU socket is), a
blend of two rooflines otherwise.
"""

from __future__ import annotations

import numpy as np

from simcluster.calibration import Calibration


#: Cache-line misses one core keeps in flight while streaming. Measured on a 2-socket Skylake-SP
#: (Xeon Platinum 8180, 28 cores, 6 x DDR4-2666) with Intel MLC v3.5: 131.2 GB/s at a loaded
#: latency of 269 ns (--loaded_latency, inject delay 100) is 131.2e9 x 269e-9 / 64 B = 551
#: lines, 9.84 per core (FD.io CSIT, docs/report/introduction/test_environment_sut_calib_skx.rst,
#: commit 4f1ba73c). Skylake-SP has 12 L1D fill buffers per core; the L2 prefetcher adds more.
LINES_PER_CORE = 9.84
LINE_BYTES = 64


def memory_throughput(latency_s: float, bw_bytes_per_s: float, lines: int) -> float:
    """Bytes/s of ``lines`` outstanding cache-line reads cycling through a ``latency_s`` delay
    and a ``bw_bytes_per_s`` server: exact mean-value analysis of the closed network."""
    if lines < 1 or latency_s < 0 or bw_bytes_per_s <= 0:
        raise ValueError("need lines >= 1, latency >= 0 and bandwidth > 0")
    service, queue, x = LINE_BYTES / bw_bytes_per_s, 0.0, 0.0
    for n in range(1, int(lines) + 1):
        r = service * (1.0 + queue)
        x = n / (latency_s + r)
        queue = x * r
    return x * LINE_BYTES


def lines_in_flight(device) -> int:
    return max(1, int(round((device.compute_units or 1) * LINES_PER_CORE)))


def remote_penalty(device) -> float:
    """How much longer a byte read from another socket takes than a local one: local over
    remote :func:`memory_throughput`, from the spec's latencies and bandwidths."""
    if device.remote_mem_bw_bytes_per_s is None:
        raise ValueError(f"{device.name} has no remote_mem_bw_bytes_per_s: no NUMA figures")
    n = lines_in_flight(device)
    local = memory_throughput(device.local_mem_latency_s or 0.0, device.mem_bw_bytes_per_s, n)
    remote = memory_throughput(device.remote_mem_latency_s or 0.0,
                               device.remote_mem_bw_bytes_per_s, n)
    return local / remote


class RemoteMemory(Calibration):
    """``inner`` with every CPU operator's memory traffic read from another socket: bytes cost
    ``penalty`` times more (default :func:`remote_penalty` of the device)."""

    def __init__(self, inner: Calibration, penalty: float | None = None):
        super().__init__()
        if penalty is not None and not penalty >= 1.0:
            raise ValueError(f"a remote penalty is >= 1 (remote is never faster), got {penalty}")
        self.inner, self.penalty = inner, penalty
        self._penalties: dict = {}
        self.name = f"{inner.name}, remote memory"

    def penalty_for(self, device) -> float:
        if self.penalty is not None:
            return self.penalty
        hit = self._penalties.get(device.name)
        if hit is None:
            hit = self._penalties[device.name] = remote_penalty(device)
        return hit

    def op_time(self, device, op, flops, bytes_, shape, dtype="bf16"):
        if device.kind == "cpu":
            bytes_ = np.asarray(bytes_, dtype=float) * self.penalty_for(device)
        return self.inner.op_time(device, op, flops, bytes_, shape, dtype)

    def link_time(self, link, op, bytes_, n_ranks=2):
        return self.inner.link_time(link, op, bytes_, n_ranks)

    def provenance(self, device) -> str:
        return self.inner.provenance(device) + " (remote-socket memory)"

    def op_provenance(self, device, op: str) -> str:
        return self.inner.op_provenance(device, op) + (
            " (remote-socket memory)" if device.kind == "cpu" else "")


class NumaTimer:
    """An iteration timer for a socket whose weights (fraction ``weights_remote``) and KV
    (``kv_remote``, or beyond ``kv_local_tokens`` of context) partly live in another socket's
    DRAM (see module docstring)."""

    def __init__(self, local, remote, weights_remote: float, kv_remote: float = 0.0,
                 kv_local_tokens: float | None = None):
        for name, f in (("weights_remote", weights_remote), ("kv_remote", kv_remote)):
            if not 0.0 <= f <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {f}")
        if kv_local_tokens is not None and kv_local_tokens < 0:
            raise ValueError(f"kv_local_tokens must be >= 0, got {kv_local_tokens}")
        self.local, self.remote = local, remote
        self.weights_remote, self.kv_remote = float(weights_remote), float(kv_remote)
        self.kv_local_tokens = kv_local_tokens

    def kv_fraction(self, context_sum):
        """Remote share of the KV a step reads (an array for an array of context sums)."""
        if self.kv_local_tokens is None:
            return self.kv_remote
        c = np.asarray(context_sum, dtype=float)
        return np.where(c > self.kv_local_tokens,
                        (c - self.kv_local_tokens) / np.maximum(c, 1.0), 0.0)

    def _blend(self, fk, base_l, base_r, full_l, full_r):
        fw = self.weights_remote
        return ((1 - fw) * base_l + fw * base_r
                + (1 - fk) * (full_l - base_l) + fk * (full_r - base_r))

    def time(self, prefill_tokens, prefill_context, n_decode, decode_context_sum, n_samples):
        args = (prefill_tokens, prefill_context, n_decode)
        fw, fk = self.weights_remote, float(self.kv_fraction(decode_context_sum))
        if fw == fk:
            t = self.local.time(*args, decode_context_sum, n_samples)
            return t if fw == 0 else (1 - fw) * t + fw * self.remote.time(
                *args, decode_context_sum, n_samples)
        return float(self._blend(fk, self.local.time(*args, 0, n_samples),
                                 self.remote.time(*args, 0, n_samples),
                                 self.local.time(*args, decode_context_sum, n_samples),
                                 self.remote.time(*args, decode_context_sum, n_samples)))

    def decode_steps(self, n_decode, context_sum, steps):
        fw = self.weights_remote
        fk = self.kv_fraction(context_sum + n_decode * np.arange(steps, dtype=float))
        full_l = self.local.decode_steps(n_decode, context_sum, steps)
        if fw == 0 and not np.any(fk):
            return full_l
        full_r = self.remote.decode_steps(n_decode, context_sum, steps)
        if self.kv_local_tokens is None and fw == fk:
            return (1 - fw) * full_l + fw * full_r
        empty = np.zeros(0, dtype=np.int64)
        base_l = self.local.time(empty, empty, n_decode, 0, n_decode)
        base_r = self.remote.time(empty, empty, n_decode, 0, n_decode)
        return self._blend(fk, base_l, base_r, full_l, full_r)

    def __getattr__(self, name):
        return getattr(self.local, name)
