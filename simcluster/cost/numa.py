"""Reading another socket's memory: the iteration time of a CPU socket under NUMA.

A socket reads its own DRAM at ``mem_bw_bytes_per_s`` and another socket's at
``remote_mem_bw_bytes_per_s`` (through the socket links): both are spec values. Decode on a CPU
is memory-bound — every step streams the weights and each sequence's KV — so placement decides
its speed (the placements themselves are policies: :mod:`simcluster.policies.numa`).

The cost model stays pure. :class:`RemoteMemory` is a calibration that wraps another and charges
a CPU operator's bytes at the remote bandwidth (it scales the bytes by local/remote bandwidth,
which for any roofline-form calibration equals reading them at the remote rate).
:class:`NumaTimer` blends an instance's all-local and all-remote iteration times by the
fraction of weight bytes and of KV bytes that are remote: ``t = (1 - f_w) base_local + f_w
base_remote + (1 - f_kv) attn_local + f_kv attn_remote``, where ``attn`` is the decode-attention
part (the time's growth with KV context) and ``base`` the rest. Exact when each part is memory
bound (decode on a CPU socket is), a blend of two rooflines otherwise.
"""

from __future__ import annotations

import numpy as np

from simcluster.calibration import Calibration


class RemoteMemory(Calibration):
    """``inner`` with every CPU operator's memory traffic read from a remote socket."""

    def __init__(self, inner: Calibration):
        super().__init__()
        self.inner = inner
        self.name = f"{inner.name}, remote memory"

    def op_time(self, device, op, flops, bytes_, shape, dtype="bf16"):
        if device.kind == "cpu":
            bytes_ = np.asarray(bytes_, dtype=float) * (
                device.mem_bw_bytes_per_s / device.remote_mem_bw_bytes_per_s)
        return self.inner.op_time(device, op, flops, bytes_, shape, dtype)

    def link_time(self, link, op, bytes_, n_ranks=2):
        return self.inner.link_time(link, op, bytes_, n_ranks)

    def provenance(self, device) -> str:
        return self.inner.provenance(device) + " (remote-socket memory)"


class NumaTimer:
    """An iteration timer for a socket whose weights (fraction ``weights_remote``) and KV
    (``kv_remote``) partly live in another socket's DRAM (see module docstring)."""

    def __init__(self, local, remote, weights_remote: float, kv_remote: float):
        for name, f in (("weights_remote", weights_remote), ("kv_remote", kv_remote)):
            if not 0.0 <= f <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {f}")
        self.local, self.remote = local, remote
        self.weights_remote, self.kv_remote = float(weights_remote), float(kv_remote)

    def _blend(self, base_l, base_r, full_l, full_r):
        fw, fk = self.weights_remote, self.kv_remote
        return ((1 - fw) * base_l + fw * base_r
                + (1 - fk) * (full_l - base_l) + fk * (full_r - base_r))

    def time(self, prefill_tokens, prefill_context, n_decode, decode_context_sum, n_samples):
        args = (prefill_tokens, prefill_context, n_decode)
        fw, fk = self.weights_remote, self.kv_remote
        if fw == fk:
            t = self.local.time(*args, decode_context_sum, n_samples)
            return t if fw == 0 else (1 - fw) * t + fw * self.remote.time(
                *args, decode_context_sum, n_samples)
        return float(self._blend(self.local.time(*args, 0, n_samples),
                                 self.remote.time(*args, 0, n_samples),
                                 self.local.time(*args, decode_context_sum, n_samples),
                                 self.remote.time(*args, decode_context_sum, n_samples)))

    def decode_steps(self, n_decode, context_sum, steps):
        fw, fk = self.weights_remote, self.kv_remote
        full_l = self.local.decode_steps(n_decode, context_sum, steps)
        if fw == fk == 0:
            return full_l
        full_r = self.remote.decode_steps(n_decode, context_sum, steps)
        if fw == fk:
            return (1 - fw) * full_l + fw * full_r
        empty = np.zeros(0, dtype=np.int64)
        base_l = self.local.time(empty, empty, n_decode, 0, n_decode)
        base_r = self.remote.time(empty, empty, n_decode, 0, n_decode)
        return self._blend(base_l, base_r, full_l, full_r)

    def __getattr__(self, name):
        return getattr(self.local, name)
