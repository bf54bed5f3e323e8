"""NUMA placement: where a CPU socket's weights and KV live.

A host has S sockets, each a device (``kind = "cpu"``) with its own DRAM; what reading the other
socket's DRAM costs is :mod:`simcluster.cost.numa` (from the spec's latencies and bandwidths, or
a what-if ``remote_penalty``). A placement decides, for each CPU-socket instance of a decode
pool, which of its weight bytes and KV bytes live in another socket's DRAM and how much KV it
can hold, and gives the instance the matching :class:`~simcluster.cost.numa.NumaTimer`.

Instance k of the pool is socket ``decode_sockets[k % D]`` of host ``k // D`` (D =
``len(decode_sockets)``, default every socket of a host: ``range(sockets_per_host)``). Sockets
that decode nothing are *idle*: their DRAM is free for other sockets' overflow.

Placements (``NUMA_PLACEMENTS``):

* ``aware`` — hLLM's NUMA-aware dispatcher, "placing a higher value on the placement of model
  weights than on that of the KV cache": **weights first** — each decoding socket's DRAM takes a
  replica of the weights (what does not fit is read from another socket), then its KV. Each
  request's KV is written into the DRAM of the socket that decodes it (the dispatcher picks the
  socket before the copy). If a socket should hold more KV (``kv_tokens`` per socket) than its
  own DRAM leaves, the rest **spills to another socket's free DRAM** (idle sockets first, then
  others' leftovers, in socket order) and is read remotely once the local blocks are full. With
  ``kv_tokens`` unset every socket holds what its DRAM leaves: all accesses local.
* ``kv_first`` — the opposite priority, for comparison: each socket's DRAM takes its KV first
  (``kv_tokens``), then as much of the weights as still fits; the rest of the weights is read
  from another socket's copy.
* ``oblivious`` — the baseline: one copy of the weights and all KV in the *home* socket's DRAM
  (the socket of the GPU's PCIe root: the loader's first touch and the pinned buffers the KV is
  copied into), while the OS spreads decode over every socket. Home socket: all local; the
  others read weights and KV remotely (f_w = f_kv = 1). KV capacity is still counted per
  instance (not pooled on the home socket).
* ``interleave`` — ``numactl --interleave=all``: pages spread evenly, so on every socket a
  fraction (S-1)/S of all bytes is remote.

Records: ``placement.placed`` — one row per instance: (instance, host, socket, weights_remote,
kv_remote, kv_local_tokens, kv_capacity_tokens); ``kv_remote`` is None where it varies with the
batch (spilled KV).

The KV transfer over PCIe is timed on the cluster's ``kv_link`` whatever the socket: on a
2-socket host the extra socket-link hop to a non-home socket is faster than PCIe, so it does not
lengthen the copy. The dispatcher's choice of socket and its pipeline of copies is
``numa_minibatch`` (:mod:`simcluster.policies.minibatch`).
"""

from __future__ import annotations

from dataclasses import dataclass

from simcluster.cost import CostModel
from simcluster.cost.numa import NumaTimer, RemoteMemory
from simcluster.policies.registry import NUMA_PLACEMENTS


@dataclass
class SocketPlan:
    """Where one socket's bytes live: remote weight fraction, KV (fixed remote fraction, or the
    tokens held locally before spilling) and the KV tokens it can hold in all."""

    weights_remote: float = 0.0
    kv_remote: float = 0.0
    kv_local_tokens: float | None = None
    kv_capacity_tokens: int | None = None      # None: what its memory plan gives


class _Placement:
    """A placement over the CPU-socket instances of a pool (see module docstring)."""

    def __init__(self, sockets_per_host: int = 2, home_socket: int = 0,
                 remote_penalty: float | None = None, kv_tokens: int | None = None,
                 decode_sockets: list[int] | None = None):
        if sockets_per_host < 1 or not 0 <= home_socket < sockets_per_host:
            raise ValueError(f"need sockets_per_host >= 1 and 0 <= home_socket < "
                             f"sockets_per_host, got {sockets_per_host}, {home_socket}")
        if remote_penalty is not None and not remote_penalty >= 1:
            raise ValueError(f"remote_penalty must be >= 1, got {remote_penalty}")
        if kv_tokens is not None and kv_tokens < 1:
            raise ValueError(f"kv_tokens must be >= 1, got {kv_tokens}")
        ds = list(range(sockets_per_host)) if decode_sockets is None else list(decode_sockets)
        if not ds or len(set(ds)) != len(ds) or not all(0 <= s < sockets_per_host for s in ds):
            raise ValueError(f"decode_sockets must be distinct sockets in [0, "
                             f"{sockets_per_host}), got {decode_sockets}")
        self.sockets, self.home = int(sockets_per_host), int(home_socket)
        self.remote_penalty, self.kv_tokens, self.decode_sockets = remote_penalty, kv_tokens, ds
        self.placed: list[tuple] = []

    def plan(self, socket: int, mem, host_spare: list) -> SocketPlan:
        """The plan of one decoding socket (``mem``: its memory plan's rank; ``host_spare``:
        free bytes on the host's other sockets, consumed in place by spills)."""
        raise NotImplementedError

    def apply(self, pool, cost_model: CostModel, model):
        """Give each CPU-socket instance of ``pool`` the timer and KV room of its placement."""
        remote_cost = CostModel(RemoteMemory(cost_model.calibration, self.remote_penalty))
        sockets = [inst for inst in pool if inst.layout.devices[0].kind == "cpu"]
        for inst in sockets:
            if inst.layout.num_devices != 1:
                raise ValueError(f"NUMA placement needs one socket per instance; "
                                 f"{inst.name} has {inst.layout.num_devices} devices")
        per_host = len(self.decode_sockets)
        for h in range(0, len(sockets), per_host):
            host = sockets[h:h + per_host]
            spare = self._idle_spare(host)
            for j, inst in enumerate(host):
                socket = self.decode_sockets[j]
                p = self.plan(socket, inst.memory.ranks[0], spare)
                self._install(inst, p, remote_cost, cost_model, model)
                self.placed.append((inst.id, h // per_host, socket, p.weights_remote,
                                    None if p.kv_local_tokens is not None else p.kv_remote,
                                    p.kv_local_tokens, inst.kv.total_blocks * inst.kv.block_size))
        return self

    def _idle_spare(self, host) -> list:
        """Free DRAM of the host's idle sockets (the same device as its decoding ones); each
        decoding socket's plan appends what it leaves free."""
        r = host[0].memory.ranks[0]
        idle = self.sockets - len(self.decode_sockets)
        return [r.mem_bytes] * idle

    @staticmethod
    def _install(inst, p: SocketPlan, remote_cost, cost_model, model):
        if p.kv_capacity_tokens is not None:      # a new, empty cache of the instance's kind
            inst.kv = type(inst.kv)(int(p.kv_capacity_tokens) // inst.kv.block_size,
                                    inst.kv.block_size)
        if p.weights_remote or p.kv_remote or p.kv_local_tokens is not None:
            # a cost model with its own timers (e.g. analytic) has no memory to place
            remote = (remote_cost.timer(model, inst.layout)
                      if type(cost_model).timer is CostModel.timer else inst.timer)
            inst.timer = NumaTimer(inst.timer, remote, p.weights_remote, p.kv_remote,
                                   p.kv_local_tokens)


def _take(spare: list, need: float) -> float:
    """Take up to ``need`` bytes from the spare list (in order); returns what was found."""
    got = 0.0
    for k, free in enumerate(spare):
        t = min(free, need - got)
        if t > 0:
            spare[k] -= t
            got += t
    return got


@NUMA_PLACEMENTS.register("aware")
class Aware(_Placement):
    """Weights first; KV local, spilling to another socket's free DRAM (module docstring)."""

    def plan(self, socket, mem, host_spare):
        room = mem.mem_bytes - mem.reserve_bytes
        w_local = min(mem.weight_bytes, room)
        w_far = mem.weight_bytes - w_local
        if w_far and _take(host_spare, w_far) < w_far:
            raise ValueError(f"{mem.device}: the host's DRAM cannot hold the weights "
                             f"({mem.weight_bytes / 2**30:.1f} GiB per socket)")
        k = mem.kv_bytes_per_token
        local = int((room - w_local) // k)
        want = self.kv_tokens or local
        held = min(want, local)
        leftover = room - w_local - held * k
        spilled = int(_take(host_spare, (want - held) * k) // k) if want > held else 0
        host_spare.append(leftover)        # what this socket leaves, for the sockets after it
        fw = w_far / mem.weight_bytes if mem.weight_bytes else 0.0
        if self.kv_tokens is None and not fw:
            return SocketPlan()
        return SocketPlan(fw, 0.0, float(held) if spilled else None, held + spilled)


@NUMA_PLACEMENTS.register("kv_first")
class KvFirst(_Placement):
    """KV first; the weights that no longer fit are read from another socket."""

    def plan(self, socket, mem, host_spare):
        room = mem.mem_bytes - mem.reserve_bytes
        k = mem.kv_bytes_per_token
        want = self.kv_tokens or int(max(0.0, room - mem.weight_bytes) // k)
        held = min(want, int(room // k))
        spilled = int(_take(host_spare, (want - held) * k) // k) if want > held else 0
        w_local = min(mem.weight_bytes, room - held * k)
        fw = 1.0 - w_local / mem.weight_bytes if mem.weight_bytes else 0.0
        host_spare.append(max(0.0, room - held * k - w_local))
        return SocketPlan(fw, 0.0, float(held) if spilled else None, held + spilled)


@NUMA_PLACEMENTS.register("oblivious")
class Oblivious(_Placement):
    """Weights and KV in the home socket's DRAM, decode on every socket: the others read
    both remotely (the baseline)."""

    def plan(self, socket, mem, host_spare):
        return SocketPlan() if socket == self.home else SocketPlan(1.0, 1.0)


@NUMA_PLACEMENTS.register("interleave")
class Interleave(_Placement):
    """Pages interleaved over the sockets: (S-1)/S of weights and KV read remotely."""

    def plan(self, socket, mem, host_spare):
        f = (self.sockets - 1) / self.sockets
        return SocketPlan(f, f)
