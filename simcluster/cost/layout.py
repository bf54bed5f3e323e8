"""Parallel layout of one model replica over one or more devices.

A :class:`Layout` says which devices hold the replica and how the model is cut across them:
``pp`` pipeline stages, each of ``tp`` tensor-parallel ranks. Ranks of a stage may be
*different* devices (a Hels-style heterogeneous instance); each rank then carries its own share
of the attention heads (``head_shares``), of the FFN columns (``ffn_shares``) and of the KV
cache (``kv_shares``). The default is the equal split that vLLM uses. Shares are fractions
that sum to one over the ranks of a stage; the same split applies to every stage.

*Asymmetric stages* (HexGen): ``stage_tp`` gives each stage its own TP degree (the devices,
stage-major, are ``stage_tp[0]`` ranks of stage 0, then stage 1's ...; equal shares within a
stage) and ``stage_layers`` each stage's layer count (default: as even as possible, the first
stages taking the remainder). ``recompute_shares`` (one per device, stage-major) is the share
of a device's KV tokens kept as layer inputs whose K and V are recomputed at every decode step
(KV partial-store-and-recompute; :mod:`simcluster.cost.memory` and the cost model price both
sides).

A mixture-of-experts replica may add *attention data parallelism* and *expert parallelism*:
each stage then has ``tp x dp`` devices, ``dp`` groups of ``tp`` ranks that each run the
attention of their own sequences (their own KV), and the routed experts are spread over
``ep`` of the stage's ranks (``ep = tp x dp``, or 1 for experts sharded by TP like a dense
MLP). :func:`simcluster.cost.parallel.check_parallel` checks a layout against a model.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Sequence

from simcluster.hardware import DeviceSpec, LinkSpec, load_device, load_link


def _equal(n: int) -> tuple[float, ...]:
    return tuple(1.0 / n for _ in range(n))


def _check_degrees(**degrees):
    """tp, pp, ep and dp are whole numbers >= 1 (ValueError naming the first that is not)."""
    for name, value in degrees.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"tp, pp, ep and dp must be whole numbers >= 1, got "
                             f"{name}={value!r}")


@dataclass(frozen=True, repr=False)
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
    stage_tp: tuple[int, ...] = field(default=())          # per-stage TP degree (asymmetric)
    stage_layers: tuple[int, ...] = field(default=())      # layers per stage
    recompute_shares: tuple[float, ...] = field(default=())   # per device, stage-major
    ep: int = 1                           # expert-parallel ranks of a stage (1 or tp * dp)
    dp: int = 1                           # attention data-parallel groups of a stage

    def __post_init__(self):
        self._resolve_names()
        _check_degrees(tp=self.tp, pp=self.pp, ep=self.ep, dp=self.dp)
        self._check_stages()
        if not self.stage_tp and len(self.devices) != self.tp * self.pp * self.dp:
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
        rc = self.recompute_shares
        if rc and self.dp > 1:
            raise ValueError("recompute_shares apply to one attention group (dp = 1)")
        if rc and (len(rc) != len(self.devices) or any(not 0 <= x < 1 for x in rc)):
            raise ValueError(f"recompute_shares needs one value in [0, 1) per device "
                             f"({len(self.devices)}), got {rc}")

    def _check_stages(self):
        st, sl = self.stage_tp, self.stage_layers
        if st:
            if len(st) != self.pp or any(int(t) != t or t < 1 for t in st):
                raise ValueError(f"stage_tp needs {self.pp} TP degrees >= 1, got {st}")
            if sum(st) != len(self.devices):
                raise ValueError(f"stage_tp {st} needs {sum(st)} devices, got "
                                 f"{len(self.devices)}")
            if self.tp != max(st):
                raise ValueError(f"with stage_tp, tp is the largest stage's degree "
                                 f"({max(st)}), got {self.tp}")
            if any((self.head_shares, self.ffn_shares, self.kv_shares)):
                raise ValueError("stages of different TP degrees split equally: give no "
                                 "head_shares, ffn_shares or kv_shares with stage_tp")
            if self.ep > 1 or self.dp > 1:
                raise ValueError("asymmetric stages (stage_tp) take no expert or attention "
                                 "data parallelism (ep = dp = 1)")
        if sl and (len(sl) != self.pp or any(int(n) != n or n < 1 for n in sl)):
            raise ValueError(f"stage_layers needs {self.pp} layer counts >= 1, got {sl}")

    @classmethod
    def uniform(cls, device: DeviceSpec | str, tp: int = 1, pp: int = 1,
                link: LinkSpec | str | None = None, stage_link: LinkSpec | str | None = None,
                *, ep: int = 1, dp: int = 1) -> "Layout":
        """``tp * dp * pp`` copies of one device with the equal split (a device or link may
        be given by name)."""
        _check_degrees(tp=tp, pp=pp, ep=ep, dp=dp)
        return cls(devices=(device,) * (tp * pp * dp), tp=tp, pp=pp, link=link,
                   stage_link=stage_link, ep=ep, dp=dp)

    @classmethod
    def heterogeneous(cls, devices: Sequence[DeviceSpec], link: LinkSpec, *,
                      head_shares=(), ffn_shares=(), kv_shares=(),
                      recompute_shares=()) -> "Layout":
        """One stage of tensor parallelism over the given (possibly different) devices."""
        return cls(devices=tuple(devices), tp=len(devices), pp=1, link=link,
                   head_shares=tuple(head_shares), ffn_shares=tuple(ffn_shares),
                   kv_shares=tuple(kv_shares), recompute_shares=tuple(recompute_shares))

    @classmethod
    def staged(cls, stages: Sequence[Sequence[DeviceSpec]], layers: Sequence[int] = (), *,
               link: LinkSpec | None = None, stage_link: LinkSpec | None = None,
               recompute_shares=()) -> "Layout":
        """Pipeline stages of their own TP degree (each stage's devices) and layer counts."""
        tps = tuple(len(s) for s in stages)
        return cls(devices=tuple(d for s in stages for d in s), tp=max(tps), pp=len(tps),
                   link=link, stage_link=stage_link, stage_tp=tps, stage_layers=tuple(layers),
                   recompute_shares=tuple(recompute_shares))

    @property
    def num_devices(self) -> int:
        return len(self.devices)

    @property
    def stage_tps(self) -> tuple[int, ...]:
        """TP degree of each stage."""
        return self.stage_tp or (self.tp,) * self.pp

    def layers(self, num_layers: int) -> tuple[int, ...]:
        """Layers of each stage for a model of ``num_layers``."""
        if self.stage_layers:
            if sum(self.stage_layers) != num_layers:
                raise ValueError(f"stage_layers {self.stage_layers} sum to "
                                 f"{sum(self.stage_layers)}, the model has {num_layers}")
            return self.stage_layers
        base, extra = divmod(num_layers, self.pp)
        return tuple(base + (1 if s < extra else 0) for s in range(self.pp))

    def stage(self, s: int) -> tuple[DeviceSpec, ...]:
        start = sum(self.stage_tps[:s]) if self.stage_tp else s * self.tp * self.dp
        return self.devices[start:start + (self.stage_tps[s] if self.stage_tp
                                           else self.tp * self.dp)]

    def recompute(self, s: int) -> tuple[float, ...]:
        """Recompute share of each rank of stage ``s`` (zeros by default)."""
        if not self.recompute_shares:
            return (0.0,) * self.stage_tps[s]
        start = sum(self.stage_tps[:s])
        return self.recompute_shares[start:start + self.stage_tps[s]]

    def stage_layout(self, s: int) -> "Layout":
        """Stage ``s`` of an asymmetric layout as a one-stage layout of its own."""
        devs = self.stage(s)
        return Layout(devices=devs, tp=len(devs), link=self.link if len(devs) > 1 else None,
                      recompute_shares=self.recompute(s) if self.recompute_shares else ())

    @property
    def is_uniform(self) -> bool:
        eq = _equal(self.tp)
        return (len(set(d.name for d in self.devices)) == 1 and self.head_shares == eq
                and self.ffn_shares == eq and self.kv_shares == eq and not self.stage_tp
                and not any(self.recompute_shares))

    def _resolve_names(self):
        """Devices and links may be given by name (``Layout.uniform("H100-SXM")``); anything
        else than a spec or a name is a TypeError naming the field."""
        devices = tuple(load_device(d) if isinstance(d, str) else d for d in self.devices)
        for d in devices:
            if not isinstance(d, DeviceSpec):
                raise TypeError(f"devices: expected DeviceSpecs or device names (load_device); "
                                f"got {type(d).__name__}")
        object.__setattr__(self, "devices", devices)
        for name in ("link", "stage_link"):
            v = getattr(self, name)
            if isinstance(v, str):
                object.__setattr__(self, name, load_link(v))
            elif v is not None and not isinstance(v, LinkSpec):
                raise TypeError(f"{name}: expected a LinkSpec or a link's name (load_link); "
                                f"got {type(v).__name__}")

    def __repr__(self) -> str:
        """One line: the degrees, the devices (runs of one name counted), the links and any
        uneven shares (the dataclass's repr spelt every device's whole spec, 6,500 characters
        for eight GPUs)."""
        parts = [f"tp={self.tp}", f"pp={self.pp}"]
        parts += [f"{k}={v}" for k, v in (("dp", self.dp), ("ep", self.ep)) if v > 1]
        if self.stage_tp:
            parts += [f"stage_tp={list(self.stage_tp)}", f"stage_layers={list(self.stage_layers)}"]
        parts.append(f"devices=[{self._device_names()}]")
        if self.link is not None:
            parts.append(f"link={self.link.name}")
        if self.stage_link is not None and self.stage_link != self.link:
            parts.append(f"stage_link={self.stage_link.name}")
        eq = _equal(self.tp)
        for name in ("head_shares", "ffn_shares", "kv_shares", "recompute_shares"):
            v = getattr(self, name)
            if any(v) and v != eq:
                parts.append(f"{name}=({', '.join(f'{x:.4g}' for x in v)})")
        return f"Layout({', '.join(parts)})"

    def _device_names(self) -> str:
        """The devices in rank order, a run of one name counted: '8x H100-SXM',
        '2x A100-80GB-PCIe,2x RTX3090'."""
        runs: list[list] = []
        for d in self.devices:
            if runs and runs[-1][0] == d.name:
                runs[-1][1] += 1
            else:
                runs.append([d.name, 1])
        return ",".join(n if c == 1 else f"{c}x {n}" for n, c in runs)

    def describe(self) -> str:
        names = self._device_names()
        if self.stage_tp:
            return f"stages tp={list(self.stage_tp)} layers={list(self.stage_layers)} [{names}]"
        extra = "".join(f" {k}={v}" for k, v in (("dp", self.dp), ("ep", self.ep)) if v > 1)
        return f"tp={self.tp} pp={self.pp}{extra} [{names}]"
