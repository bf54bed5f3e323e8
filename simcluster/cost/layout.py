"""Parallel layout of one model replica over one or more devices.

A :class:`Layout` says which devices hold the replica and how the model is cut across them:
``pp`` pipeline stages, each of ``tp`` tensor-parallel ranks. Ranks of a stage may be
*different* devices (a Hels-style heterogeneous instance); each rank then carries its own share
of the attention heads (``head_shares``), of the FFN columns (``ffn_shares``) and of the KV
cache (``kv_shares``). The default is the equal split that vLLM uses. Shares are fractions
that sum to one over the ranks of a stage; the same split applies to every stage.

A mixture-of-experts replica may add *attention data parallelism* and *expert parallelism*:
each stage then has ``tp x dp`` devices, ``dp`` groups of ``tp`` ranks that each run the
attention of their own sequences (their own KV), and the routed experts are spread over
``ep`` of the stage's ranks (``ep = tp x dp``, or 1 for experts sharded by TP like a dense
MLP). :func:`simcluster.cost.parallel.check_parallel` checks a layout against a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from simcluster.hardware import DeviceSpec, LinkSpec


def _equal(n: int) -> tuple[float, ...]:
    return tuple(1.0 / n for _ in range(n))


@dataclass(frozen=True)
class Layout:
    """Devices of one replica, stage-major: ``devices[s * tp + r]`` is rank r of stage s."""

    devices: tuple[DeviceSpec, ...]
    tp: int = 1
    pp: int = 1
    link: LinkSpec | None = None          # link between the ranks of a stage (TP collectives)
    stage_link: LinkSpec | None = None    # link between pipeline stages (defaults to ``link``)
    head_shares: tuple[float, ...] = field(default=())
    ffn_shares: tuple[float, ...] = field(default=())
    kv_shares: tuple[float, ...] = field(default=())
    ep: int = 1                           # expert-parallel ranks of a stage (1 or tp * dp)
    dp: int = 1                           # attention data-parallel groups of a stage

    def __post_init__(self):
        if self.tp < 1 or self.pp < 1 or self.ep < 1 or self.dp < 1:
            raise ValueError(f"tp, pp, ep and dp must be >= 1, got tp={self.tp}, pp={self.pp}, "
                             f"ep={self.ep}, dp={self.dp}")
        if len(self.devices) != self.tp * self.pp * self.dp:
            what = "tp*pp" if self.dp == 1 else "tp*dp*pp"
            raise ValueError(f"layout needs {what} = {self.tp * self.pp * self.dp} devices, "
                             f"got {len(self.devices)}")
        if self.tp * self.dp > 1 and self.link is None:
            raise ValueError("a layout with tp > 1 (or dp > 1) needs a link for its collectives")
        if self.pp > 1 and self.stage_link is None and self.link is None:
            raise ValueError("a layout with pp > 1 needs a stage_link (or link)")
        for name in ("head_shares", "ffn_shares", "kv_shares"):
            shares = getattr(self, name)
            if not shares:
                object.__setattr__(self, name, _equal(self.tp))
                continue
            if len(shares) != self.tp:
                raise ValueError(f"{name} needs {self.tp} entries (one per TP rank), "
                                 f"got {len(shares)}")
            if any(s < 0 for s in shares) or abs(sum(shares) - 1.0) > 1e-9:
                raise ValueError(f"{name} must be non-negative and sum to 1, got {shares}")

    @classmethod
    def uniform(cls, device: DeviceSpec, tp: int = 1, pp: int = 1,
                link: LinkSpec | None = None, stage_link: LinkSpec | None = None, *,
                ep: int = 1, dp: int = 1) -> "Layout":
        """``tp * dp * pp`` copies of one device with the equal split."""
        return cls(devices=(device,) * (tp * pp * dp), tp=tp, pp=pp, link=link,
                   stage_link=stage_link, ep=ep, dp=dp)

    @classmethod
    def heterogeneous(cls, devices: Sequence[DeviceSpec], link: LinkSpec, *,
                      head_shares=(), ffn_shares=(), kv_shares=()) -> "Layout":
        """One stage of tensor parallelism over the given (possibly different) devices."""
        return cls(devices=tuple(devices), tp=len(devices), pp=1, link=link,
                   head_shares=tuple(head_shares), ffn_shares=tuple(ffn_shares),
                   kv_shares=tuple(kv_shares))

    @property
    def num_devices(self) -> int:
        return len(self.devices)

    def stage(self, s: int) -> tuple[DeviceSpec, ...]:
        n = self.tp * self.dp
        return self.devices[s * n:(s + 1) * n]

    @property
    def is_uniform(self) -> bool:
        eq = _equal(self.tp)
        return (len(set(d.name for d in self.devices)) == 1 and self.head_shares == eq
                and self.ffn_shares == eq and self.kv_shares == eq)

    def describe(self) -> str:
        names = ",".join(d.name for d in self.devices)
        extra = "".join(f" {k}={v}" for k, v in (("dp", self.dp), ("ep", self.ep)) if v > 1)
        return f"tp={self.tp} pp={self.pp}{extra} [{names}]"
