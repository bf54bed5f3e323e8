"""NUMA: where a CPU socket's weights and KV live, and what reading the other socket costs.

A host has S sockets, each a device (``kind = "cpu"``) with its own DRAM. A socket reads its own
DRAM at ``mem_bw_bytes_per_s`` and another socket's at ``remote_mem_bw_bytes_per_s`` (through
the socket links): both are spec values. Decode on a CPU is memory-bound — every step streams the
weights and each sequence's KV — so placement decides its speed.

The cost model stays pure. :class:`RemoteMemory` is a calibration that wraps another and charges
a CPU operator's bytes at the remote bandwidth (it scales the bytes by local/remote bandwidth,
which for any roofline-form calibration equals reading them at the remote rate).
:class:`NumaTimer` blends an instance's all-local and all-remote iteration times by the
fraction of weight bytes and of KV bytes that are remote: ``t = (1 - f_w) base_local + f_w
base_remote + (1 - f_kv) attn_local + f_kv attn_remote``, where ``attn`` is the decode-attention
part (the time's growth with KV context) and ``base`` the rest. Exact when each part is memory
bound (decode on a CPU socket is), a blend of two rooflines otherwise.

Placements (``NUMA_PLACEMENTS``), applied to the CPU-socket instances of a pool in order —
instance k is socket ``k % sockets_per_host`` of host ``k // sockets_per_host``:

* ``aware`` — hLLM's NUMA-aware dispatcher: weights are placed first, one replica in every
  socket's DRAM (the memory plan already charges each socket instance its own copy), and each
  request's KV is written into the DRAM of the socket that decodes it (the dispatcher picks the
  socket when the KV leaves the GPU). Every access is local: f_w = f_kv = 0.
* ``oblivious`` — the baseline: one copy of the weights and all KV in the *home* socket's DRAM
  (the socket of the GPU's PCIe root: the loader's first touch and the pinned buffers the KV is
  copied into), while the OS spreads decode over every socket. Home socket: all local; the
  others read weights and KV remotely (f_w = f_kv = 1). KV capacity is still counted per
  instance (not pooled on the home socket): memory is rarely what binds a CPU socket.
* ``interleave`` — ``numactl --interleave=all``: pages spread evenly, so on every socket a
  fraction (S-1)/S of all bytes is remote.

The KV transfer over PCIe is timed on the cluster's ``kv_link`` whatever the socket: on a
2-socket host the extra socket-link hop to a non-home socket is faster than PCIe, so it does not
lengthen the copy.

``numa_minibatch`` (``ROUTERS``) is the dispatcher's choice of socket: requests that leave the
GPU are grouped into mini-batches of ``mini_batch`` consecutive hand-offs; each mini-batch goes
to one socket — the active one with the least outstanding work, preferring another socket
than the previous mini-batch's — so one socket starts decoding a mini-batch while the next
mini-batch's KV is still crossing PCIe (the pipeline).
"""

from __future__ import annotations

import numpy as np

from simcluster.calibration import Calibration
from simcluster.cost import CostModel
from simcluster.policies.registry import ROUTERS, Registry

NUMA_PLACEMENTS = Registry("numa placement")


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


class _Placement:
    """Fractions of remote weight and KV bytes per socket of a host."""

    def __init__(self, sockets_per_host: int = 2, home_socket: int = 0):
        if sockets_per_host < 1 or not 0 <= home_socket < sockets_per_host:
            raise ValueError(f"need sockets_per_host >= 1 and 0 <= home_socket < "
                             f"sockets_per_host, got {sockets_per_host}, {home_socket}")
        self.sockets, self.home = int(sockets_per_host), int(home_socket)
        self.placed: list[tuple] = []    # (instance id, host, socket, weights_remote, kv_remote)

    def fractions(self, socket: int) -> tuple[float, float]:
        raise NotImplementedError

    def apply(self, pool, cost_model: CostModel, model):
        """Give each CPU-socket instance of ``pool`` the timer of its placement."""
        remote_cost = CostModel(RemoteMemory(cost_model.calibration))
        sockets = [inst for inst in pool if inst.layout.devices[0].kind == "cpu"]
        for k, inst in enumerate(sockets):
            if inst.layout.num_devices != 1:
                raise ValueError(f"NUMA placement needs one socket per instance; "
                                 f"{inst.name} has {inst.layout.num_devices} devices")
            socket = k % self.sockets
            fw, fk = self.fractions(socket)
            self.placed.append((inst.id, k // self.sockets, socket, fw, fk))
            if fw or fk:
                # a cost model with its own timers (e.g. analytic) has no memory to place
                remote = (remote_cost.timer(model, inst.layout)
                          if type(cost_model).timer is CostModel.timer else inst.timer)
                inst.timer = NumaTimer(inst.timer, remote, fw, fk)
        return self


@NUMA_PLACEMENTS.register("aware")
class Aware(_Placement):
    def fractions(self, socket):
        return 0.0, 0.0


@NUMA_PLACEMENTS.register("oblivious")
class Oblivious(_Placement):
    def fractions(self, socket):
        return (0.0, 0.0) if socket == self.home else (1.0, 1.0)


@NUMA_PLACEMENTS.register("interleave")
class Interleave(_Placement):
    def fractions(self, socket):
        f = (self.sockets - 1) / self.sockets
        return f, f


@ROUTERS.register("numa_minibatch")
class MiniBatchDispatcher:
    """hLLM's dispatch of a prefilled batch as mini-batches over sockets (module docstring)."""

    def __init__(self, mini_batch: int = 4):
        if mini_batch < 1:
            raise ValueError(f"mini_batch must be >= 1, got {mini_batch}")
        self.mini_batch = int(mini_batch)
        self.current, self.count = None, 0

    def bind(self, cluster):
        return self

    def route(self, request, candidates, now):
        if self.current in candidates and self.count < self.mini_batch:
            self.count += 1
            return self.current
        others = [i for i in candidates if i is not self.current] or list(candidates)
        self.current = min(others, key=lambda i: (i.outstanding_tokens / i.speed, i.id))
        self.count = 1
        return self.current
