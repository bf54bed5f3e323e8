"""Parallel layout of one model replica over one or more devices.

A :class:`Layout` says which devices hold the replica and how the model is cut across them:
``pp`` pipeline stages, each of ``tp`` tensor-parallel ranks. Ranks of a stage may be
*different* devices (a Hels-style heterogeneous instance); each rank then carries its own share
of the attention heads (``head_shares``), of the FFN columns (``ffn_shares``) and of the KV
cache (``kv_shares``). The default is the equal split that vLLM uses. Shares are fractions
that sum to one over the ranks of a stage; the same split applies to every stage.
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

    def __post_init__(self):
        if self.tp < 1 or self.pp < 1:
            raise ValueError(f"tp and pp must be >= 1, got tp={self.tp}, pp={self.pp}")
        if len(self.devices) != self.tp * self.pp:
            raise ValueError(f"layout needs tp*pp = {self.tp * self.pp} devices, "
                             f"got {len(self.devices)}")
        if self.tp > 1 and self.link is None:
            raise ValueError("a layout with tp > 1 needs a link for its collectives")
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
                link: LinkSpec | None = None, stage_link: LinkSpec | None = None) -> "Layout":
        """``tp * pp`` copies of one device with the equal split."""
        return cls(devices=(device,) * (tp * pp), tp=tp, pp=pp, link=link,
                   stage_link=stage_link)

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
        return self.devices[s * self.tp:(s + 1) * self.tp]

    @property
    def is_uniform(self) -> bool:
        eq = _equal(self.tp)
        return (len(set(d.name for d in self.devices)) == 1 and self.head_shares == eq
                and self.ffn_shares == eq and self.kv_shares == eq)

    def describe(self) -> str:
        names = ",".join(d.name for d in self.devices)
        return f"tp={self.tp} pp={self.pp} [{names}]"
