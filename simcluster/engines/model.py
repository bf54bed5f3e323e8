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


def term_counts(prefill_tokens, prefill_context, n_decode, decode_context_sum, n_samples):
    """The counts of :data:`TERMS` for one iteration (arrays of the prefill chunks and their
    cached context; decode totals as the cost model takes them: ``decode_context_sum``
    includes each decoding sequence's new token)."""
    q = float(np.sum(prefill_tokens)) + n_decode
    kv = float(np.sum(prefill_tokens) + np.sum(prefill_context)) + decode_context_sum
    base = np.array([1.0, len(prefill_tokens) + n_decode, q, kv, q * kv, n_samples])
    out = np.zeros(len(TERMS))
    k = len(BASE_TERMS)
    if len(prefill_tokens) and q > n_decode:
        out[k:] = base
    else:
        out[:k] = base
    return out


@dataclass
class EngineTimer:
    """An :class:`~simcluster.cost.model.IterationTimer` plus engine overheads."""

    device: object
    terms: EngineTerms
    _coef: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        self._coef = self.terms.vector()

    def time(self, prefill_tokens, prefill_context, n_decode, decode_context_sum, n_samples):
        dev = self.device.time(prefill_tokens, prefill_context, n_decode, decode_context_sum,
                               n_samples) if self.terms.device_scale else 0.0
        counts = term_counts(prefill_tokens, prefill_context, n_decode, decode_context_sum,
                             n_samples)
        return float(self.terms.device_scale * dev + counts @ self._coef)

    def decode_steps(self, n_decode, context_sum, steps):
        t = self.terms
        kv = context_sum + n_decode * np.arange(steps, dtype=float)
        dev = self.device.decode_steps(n_decode, context_sum, steps) if t.device_scale else 0.0
        return (t.device_scale * dev + t.decode_iteration
                + (t.decode_sequence + t.decode_token + t.decode_sample) * n_decode
                + (t.decode_kv_token + t.decode_attn_pair * n_decode) * kv)

    def breakdown(self, batch):
        """The device timer's operator rows plus one row per overhead term."""
        rows = [dict(r, time_s=r["time_s"] * self.terms.device_scale)
                for r in self.device.breakdown(batch)]
        counts = term_counts(np.array(batch.prefill_tokens), np.array(batch.prefill_context),
                             len(batch.decode_context), sum(batch.decode_context), batch.samples)
        for name, c, k in zip(TERMS, counts, self._coef):
            rows.append({"stage": -1, "rank": -1, "device": "engine", "op": "engine",
                         "name": name, "count": c, "flops": 0.0, "bytes": float("nan"),
                         "time_s": c * k})
        return rows


class EngineCostModel(CostModel):
    """Iteration time of a real serving engine: its device time from the kernel-calibrated
    cost model (``calibration``, "measured" by default) plus the engine's overhead terms.

    Built from an :class:`~simcluster.engines.EngineSpec` (``EngineCostModel.of(spec)``, or
    ``load_engine("name").cost_model()``) or from terms directly.
    """

    def __init__(self, terms: EngineTerms, calibration="measured", name: str = ""):
        cal = load_calibration(calibration) if isinstance(calibration, str) else calibration
        super().__init__(cal)
        self.terms, self.name = terms, name

    @classmethod
    def of(cls, spec) -> "EngineCostModel":
        """The cost model of an engine spec (:func:`~simcluster.engines.load_engine`)."""
        return cls(spec.terms, spec.calibration, spec.name)

    def timer(self, model, layout) -> EngineTimer:
        return EngineTimer(super().timer(model, layout), self.terms)
