"""The engine model: kernel-calibrated device time plus the overheads a serving engine adds.

A real engine's iteration is not only its kernels: it schedules, allocates KV blocks, builds
index tensors and masks on the host, launches hundreds of kernels one by one (eager, no CUDA
graphs), copies sampled tokens back and updates request state in Python. An engine model adds
to the device timer (the roofline cost model with a measured calibration) a few overhead terms,
each a coefficient times a count of the batch:

=============  =======================================  ===========================================
term           count                                    what it stands for
=============  =======================================  ===========================================
``iteration``  1                                        host work and launches of one forward
``sequence``   requests in the batch                    per-request scheduling, index and mask ops
``token``      new tokens (prompt chunks + decodes)     per-token host and device work
``kv_token``   KV tokens attended (context + new)       gathering each request's KV into a packed
                                                        tensor and copying it again
``attn_pair``  new tokens x KV tokens attended          attention over the whole packed batch under
                                                        a dense mask (cost grows with q * kv)
``sample``     tokens sampled                           logits to host, sampling
=============  =======================================  ===========================================

Each term has two coefficients: one for *decode* iterations (no prompt tokens) and one for
*prefill* iterations (prompt chunks, with or without decodes), as DistServe's model has two
polynomials (:mod:`simcluster.cost.analytic`): an engine runs different code paths for them (the
reference engine's attention kernel, host-side mask building and per-layer launches differ with
the query length), and one set of coefficients for both misfits either kind by 10-25%.

``time = device_scale * device_time + sum(coefficient * count)``. Every count is a sum over
the batch, so a run of pure-decode steps stays one vector expression
(:meth:`EngineTimer.decode_steps`), as the instance's multi-step events need.

The device time is the cost model's with the engine's kernel accounting (which kernels its
forward launches) and execution mode (CUDA graphs or eager, per iteration kind: eager pays
each launch's host dispatch), so the fitted terms are what remains of the host: scheduling,
input and mask building, bookkeeping. ``iteration``, ``sequence``, ``token`` and ``sample``
are host terms and transfer to another model shape as they are; ``kv_token`` and
``attn_pair`` grow with the model's KV bytes and attention width and are scaled when an
engine model is applied to another model (:func:`transfer_scales`). A CUDA-graph engine pads
its batches to captured shapes (:class:`Padding`): the counts and the device time use the
padded sizes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from simcluster.calibration import load_calibration
from simcluster.cost.model import CostModel

#: Overhead terms of one iteration kind.
BASE_TERMS = ("iteration", "sequence", "token", "kv_token", "attn_pair", "sample")
#: Iteration kinds: no prompt tokens, or some.
KINDS = ("decode", "prefill")
#: All fitted terms, in order: ``decode_iteration`` ... ``prefill_sample``.
TERMS = tuple(f"{k}_{t}" for k in KINDS for t in BASE_TERMS)


@dataclass(frozen=True)
class EngineTerms:
    """Seconds per unit of each term (``decode_*`` and ``prefill_*``), and the multiplier on
    the device time."""

    decode_iteration: float = 0.0
    decode_sequence: float = 0.0
    decode_token: float = 0.0
    decode_kv_token: float = 0.0
    decode_attn_pair: float = 0.0
    decode_sample: float = 0.0
    prefill_iteration: float = 0.0
    prefill_sequence: float = 0.0
    prefill_token: float = 0.0
    prefill_kv_token: float = 0.0
    prefill_attn_pair: float = 0.0
    prefill_sample: float = 0.0
    device_scale: float = 1.0

    def __post_init__(self):
        for name in TERMS + ("device_scale",):
            v = float(getattr(self, name))
            if not np.isfinite(v) or v < 0:
                raise ValueError(f"engine term {name!r} must be finite and >= 0, got {v}")
            object.__setattr__(self, name, v)

    @classmethod
    def shared(cls, device_scale: float = 1.0, **base) -> "EngineTerms":
        """The same coefficient for both kinds (``iteration=...``, ``kv_token=...``)."""
        bad = set(base) - set(BASE_TERMS)
        if bad:
            raise ValueError(f"unknown terms {sorted(bad)}; known: {BASE_TERMS}")
        return cls(**{f"{k}_{t}": v for t, v in base.items() for k in KINDS},
                   device_scale=device_scale)

    def vector(self) -> np.ndarray:
        return np.array([getattr(self, t) for t in TERMS])

    def kind(self, kind: str) -> dict:
        return {t: getattr(self, f"{kind}_{t}") for t in BASE_TERMS}


#: Terms the host pays whatever the model (per iteration, request, token, sample): they
#: transfer to another model shape as they are.
HOST_TERMS = ("iteration", "sequence", "token", "sample")
#: Terms whose work scales with the model's shape: KV bytes moved per token attended
#: (``kv_token``) and attention work per (query, key) pair (``attn_pair``). Applied to another
#: model shape they are scaled by the ratio of those quantities (:func:`transfer_scales`).
DEVICE_TERMS = ("kv_token", "attn_pair")


@dataclass(frozen=True)
class Padding:
    """Static shapes of a CUDA-graph engine: new tokens padded up to a multiple of ``q`` (at
    most ``q_max``), KV tokens read from the cache up to a multiple of ``kv`` (at most
    ``kv_max``); logits for ``min(padded tokens, samples_max)`` rows. Zero intervals: none."""

    q: int = 0
    kv: int = 0
    q_max: int = 0
    kv_max: int = 0
    samples_max: int = 0

    def __bool__(self):
        return bool(self.q or self.kv)

    @staticmethod
    def _up(x, interval, cap):
        if not interval:
            return x
        x = np.asarray(x, dtype=float)
        out = np.where(x > 0, np.ceil(x / interval) * interval, interval)
        return np.minimum(out, cap) if cap else out

    def q_tokens(self, q):
        return self._up(q, self.q, self.q_max)

    def kv_read(self, kv):
        return self._up(kv, self.kv, self.kv_max)


def term_counts(prefill_tokens, prefill_context, n_decode, decode_context_sum, n_samples,
                pad: Padding | None = None):
    """The counts of :data:`TERMS` for one iteration (arrays of the prefill chunks and their
    cached context; decode totals as the cost model takes them: ``decode_context_sum``
    includes each decoding sequence's new token). With ``pad``, the new tokens and the KV
    read are counted at the engine's padded sizes (what its graphs compute)."""
    q = float(np.sum(prefill_tokens)) + n_decode
    kv = float(np.sum(prefill_tokens) + np.sum(prefill_context)) + decode_context_sum
    if pad:
        read = kv - q
        q = float(pad.q_tokens(q))
        kv = float(pad.kv_read(read)) + q
    base = np.array([1.0, len(prefill_tokens) + n_decode, q, kv, q * kv, n_samples])
    out = np.zeros(len(TERMS))
    k = len(BASE_TERMS)
    if len(prefill_tokens) and np.sum(prefill_tokens) > 0:
        out[k:] = base
    else:
        out[:k] = base
    return out


#: How each device-scaled term follows the model shape: ``kv_bytes`` (KV bytes per token:
#: the gather and copies of the cache), ``attention`` (query heads x head size x layers: the
#: masked attention over the packed batch) or ``none`` (host work per KV token, e.g. a dense
#: mask built on the host over padded shapes: the same for any model).
SCALINGS = ("kv_bytes", "attention", "none")
DEFAULT_TRANSFER = {"kv_token": "kv_bytes", "attn_pair": "attention"}


def transfer_scales(model, reference, rules: dict | None = None) -> dict[str, float]:
    """Factors on the device-scaled terms when an engine model fitted on ``reference`` is
    applied to ``model`` (``rules``: term -> one of :data:`SCALINGS`)."""
    rules = {**DEFAULT_TRANSFER, **(rules or {})}
    for term, how in rules.items():
        if how not in SCALINGS or term not in DEFAULT_TRANSFER:
            raise ValueError(f"transfer rule {term} = {how!r}; terms {list(DEFAULT_TRANSFER)} "
                             f"take one of {SCALINGS}")
    if reference is None or model is None:
        return {t: 1.0 for t in rules}
    factor = {"kv_bytes": model.kv_bytes_per_token / reference.kv_bytes_per_token,
              "attention": (model.num_heads * model.head_dim * model.num_layers)
              / (reference.num_heads * reference.head_dim * reference.num_layers),
              "none": 1.0}
    return {term: factor[how] for term, how in rules.items()}


@dataclass
class EngineTimer:
    """An :class:`~simcluster.cost.model.IterationTimer` plus engine overheads, at the
    engine's padded shapes, counting the iterations that fall outside its profiled envelope."""

    device: object
    terms: EngineTerms
    pad: Padding = field(default_factory=Padding)
    envelope: object = None                     # an Envelope (engines/envelope.py) or None
    scales: dict = field(default_factory=dict)  # transfer factors of the device terms
    _coef: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        coef = self.terms.vector().copy()
        for i, name in enumerate(TERMS):
            base = name.split("_", 1)[1]
            coef[i] *= self.scales.get(base, 1.0)
        self._coef = coef
        if self.envelope is not None:
            self.envelope = self.envelope.counter()

    def _pads(self, q, n_samples):
        if not self.pad:
            return 0, n_samples
        q_pad = int(self.pad.q_tokens(q))
        samples = min(q_pad, self.pad.samples_max) if self.pad.samples_max else n_samples
        return q_pad - q, max(samples, n_samples)

    def time(self, prefill_tokens, prefill_context, n_decode, decode_context_sum, n_samples):
        q = int(np.sum(prefill_tokens)) + n_decode
        extra, samples = self._pads(q, n_samples)
        dev = self.device.time(prefill_tokens, prefill_context, n_decode, decode_context_sum,
                               samples, pad_tokens=extra) if self.terms.device_scale else 0.0
        counts = term_counts(prefill_tokens, prefill_context, n_decode, decode_context_sum,
                             n_samples, self.pad)
        if self.envelope is not None:
            self.envelope.count(prefill_tokens, prefill_context, n_decode, decode_context_sum)
        return float(self.terms.device_scale * dev + counts @ self._coef)

    def decode_steps(self, n_decode, context_sum, steps):
        t = self.terms
        extra, samples = self._pads(n_decode, n_decode)
        dev = (self.device.decode_steps(n_decode, context_sum, steps, pad_tokens=extra,
                                        pad_samples=samples - n_decode)
               if t.device_scale else 0.0)
        kv = context_sum + n_decode * np.arange(steps, dtype=float)
        q = float(n_decode)
        if self.pad:
            q = float(self.pad.q_tokens(n_decode))
            kv = self.pad.kv_read(kv - n_decode) + q
        if self.envelope is not None:
            self.envelope.count_decode(n_decode, context_sum, steps)
        c = dict(zip(TERMS, self._coef))
        return (t.device_scale * dev + c["decode_iteration"]
                + c["decode_sequence"] * n_decode + c["decode_token"] * q
                + c["decode_sample"] * n_decode
                + (c["decode_kv_token"] + c["decode_attn_pair"] * q) * kv)

    def breakdown(self, batch):
        """The device timer's operator rows plus one row per overhead term."""
        rows = [dict(r, time_s=r["time_s"] * self.terms.device_scale)
                for r in self.device.breakdown(batch)]
        counts = term_counts(np.array(batch.prefill_tokens), np.array(batch.prefill_context),
                             len(batch.decode_context), sum(batch.decode_context), batch.samples,
                             self.pad)
        for name, c, k in zip(TERMS, counts, self._coef):
            rows.append({"stage": -1, "rank": -1, "device": "engine", "op": "engine",
                         "name": name, "count": c, "flops": 0.0, "bytes": float("nan"),
                         "time_s": c * k})
        return rows


class EngineCostModel(CostModel):
    """Iteration time of a real serving engine: its device time from the kernel-calibrated
    cost model (``calibration``, "measured" by default) with the engine's kernel accounting
    and execution mode, plus the engine's overhead terms; applied to another model shape than
    the one it was fitted on (``reference``), the device-scaled terms are scaled
    (:func:`transfer_scales`) and the host terms kept.

    Built from an :class:`~simcluster.engines.EngineSpec` (``EngineCostModel.of(spec)``, or
    ``load_engine("name").cost_model()``) or from terms directly.
    """

    def __init__(self, terms: EngineTerms, calibration="measured", name: str = "", *,
                 kernels="fused", execution="graphs", pad: Padding | None = None,
                 envelope=None, reference=None, transfer: dict | None = None):
        cal = load_calibration(calibration) if isinstance(calibration, str) else calibration
        super().__init__(cal, kernels=kernels, execution=execution)
        self.terms, self.name = terms, name
        self.pad = pad or Padding()
        self.envelope, self.reference = envelope, reference
        self.transfer = dict(transfer or {})

    @classmethod
    def of(cls, spec, calibration=None) -> "EngineCostModel":
        """The cost model of an engine spec (:func:`~simcluster.engines.load_engine`)."""
        from simcluster.models import load_model
        return cls(spec.terms, calibration or spec.calibration, spec.name,
                   kernels=spec.kernels, execution=spec.execution, pad=spec.padding_caps,
                   envelope=spec.envelope, reference=load_model(spec.model),
                   transfer=spec.transfer)

    def timer(self, model, layout) -> EngineTimer:
        return EngineTimer(super().timer(model, layout), self.terms, self.pad, self.envelope,
                           transfer_scales(model, self.reference, self.transfer))

    def transferred_to(self, model) -> bool:
        """Whether the engine model was fitted on another model shape than ``model``."""
        return self.reference is not None and model.name != self.reference.name
