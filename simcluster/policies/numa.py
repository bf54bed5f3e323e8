"""NUMA placement: where a CPU socket's weights and KV live, and hLLM's mini-batch dispatcher.

A host has S sockets, each a device (``kind = "cpu"``) with its own DRAM; what reading the other
socket's DRAM costs is :mod:`simcluster.cost.numa`. A placement decides, for each CPU-socket
instance of a decode pool, the fraction of its weight bytes and of its KV bytes that live in
another socket's DRAM, and gives the instance the matching :class:`~simcluster.cost.numa.NumaTimer`.

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

The dispatcher's choice of socket and its pipeline of copies is ``numa_minibatch``
(:mod:`simcluster.policies.minibatch`).
"""

from __future__ import annotations

from simcluster.cost import CostModel
from simcluster.cost.numa import NumaTimer, RemoteMemory
from simcluster.policies.registry import NUMA_PLACEMENTS


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
