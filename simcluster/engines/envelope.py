"""An engine model's envelope: the batch shapes its profile covered.

An engine model is a fit; outside the shapes it was fitted on (more new tokens per iteration,
longer contexts, larger batches) its terms extrapolate, and the extrapolation was never
checked. :meth:`Envelope.from_logs` records, over the fitted iterations, the largest

* ``max_new_tokens``: new tokens in one iteration (prompt chunks plus decodes),
* ``max_seqs``: sequences in one iteration,
* ``max_kv_tokens``: KV tokens attended in one iteration (all sequences),
* ``max_context``: KV tokens of one sequence (a prompt chunk's cached context plus the chunk;
  a decode batch's mean context);

the engine spec stores them (``[envelope]``) and every simulated iteration is checked against
them (:class:`EnvelopeCounter`); the simulation warns with the share of iterations outside,
per dimension (:func:`report_text`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

DIMENSIONS = ("max_new_tokens", "max_seqs", "max_kv_tokens", "max_context")


@dataclass(frozen=True)
class Envelope:
    """The largest batch shapes a profile covered (see module docstring)."""

    max_new_tokens: float
    max_seqs: float
    max_kv_tokens: float
    max_context: float

    @classmethod
    def from_logs(cls, logs, masks=None) -> "Envelope":
        """Over the iterations of ``logs`` (IterationLog objects) selected by ``masks``."""
        best = dict.fromkeys(DIMENSIONS, 0.0)
        for i, log in enumerate(logs):
            df = log.frame
            use = np.ones(len(df), bool) if masks is None else np.asarray(masks[i], bool)
            for j in np.flatnonzero(use):
                chunks, ctx = log.chunks(int(j))
                n_dec = int(df.decode_seqs.iloc[j])
                dctx = float(df.decode_context_tokens.iloc[j])
                shape = _shape(chunks, ctx, n_dec, dctx)
                for k in DIMENSIONS:
                    best[k] = max(best[k], shape[k])
        return cls(**best)

    @classmethod
    def from_table(cls, table: dict) -> "Envelope":
        missing = [k for k in DIMENSIONS if k not in table]
        if missing:
            raise KeyError(f"envelope lacks {missing}")
        return cls(**{k: float(table[k]) for k in DIMENSIONS})

    def as_table(self) -> dict:
        return {k: int(getattr(self, k)) for k in DIMENSIONS}

    def outside(self, shape: dict) -> list[str]:
        return [k for k in DIMENSIONS if shape[k] > getattr(self, k)]

    def counter(self) -> "EnvelopeCounter":
        return EnvelopeCounter(self)


def _shape(chunks, ctx, n_dec, dctx) -> dict:
    chunks = np.asarray(chunks, float)
    ctx = np.asarray(ctx, float)
    per_seq = float(np.max(chunks + ctx)) if len(chunks) else 0.0
    if n_dec:
        per_seq = max(per_seq, dctx / n_dec)
    return {"max_new_tokens": float(chunks.sum()) + n_dec, "max_seqs": len(chunks) + n_dec,
            "max_kv_tokens": float((chunks + ctx).sum()) + dctx, "max_context": per_seq}


@dataclass
class EnvelopeCounter:
    """Counts simulated iterations, and those outside the envelope per dimension."""

    envelope: Envelope
    iterations: int = 0
    outside_any: int = 0
    outside: dict = field(default_factory=lambda: dict.fromkeys(DIMENSIONS, 0))

    def count(self, prefill_tokens, prefill_context, n_decode, decode_context_sum):
        shape = _shape(prefill_tokens, prefill_context, n_decode, decode_context_sum)
        self._add(self.envelope.outside(shape), 1)

    def count_decode(self, n_decode, context_sum, steps):
        """``steps`` decode iterations whose context grows by one token per sequence a step."""
        env = self.envelope
        kv = context_sum + n_decode * np.arange(steps, dtype=float)
        over = {"max_new_tokens": np.full(steps, n_decode > env.max_new_tokens),
                "max_seqs": np.full(steps, n_decode > env.max_seqs),
                "max_kv_tokens": kv > env.max_kv_tokens,
                "max_context": kv / max(n_decode, 1) > env.max_context}
        self.iterations += steps
        self.outside_any += int(np.logical_or.reduce(list(over.values())).sum())
        for d, hit in over.items():
            self.outside[d] += int(hit.sum())

    def _add(self, dims, n):
        self.iterations += n
        if dims:
            self.outside_any += n
            for d in dims:
                self.outside[d] += n

    def share(self) -> float:
        return self.outside_any / self.iterations if self.iterations else 0.0


def report_text(name: str, counter: EnvelopeCounter) -> str:
    """One line: the share of iterations outside the envelope, and by which dimensions."""
    parts = [f"{d.removeprefix('max_')} {100 * n / max(counter.iterations, 1):.1f}%"
             for d, n in counter.outside.items() if n]
    env = counter.envelope
    return (f"engine model {name}: {100 * counter.share():.1f}% of {counter.iterations} "
            f"simulated iterations lie outside its profiled envelope ({', '.join(parts)}; "
            f"profiled up to {int(env.max_new_tokens)} new tokens, {int(env.max_seqs)} "
            f"sequences, {int(env.max_kv_tokens)} KV tokens an iteration and "
            f"{int(env.max_context)} tokens of context a sequence)")


class EnvelopeWarning(UserWarning):
    """Simulated iterations lie outside the engine model's profiled envelope."""


def envelope_check(instances, name: str = "engine") -> dict:
    """The envelope counters of the instances' engine timers (one per distinct timer, keyed by
    the first instance's name); warns (:class:`EnvelopeWarning`) where any iteration fell
    outside. Empty when no instance runs an engine model with an envelope."""
    import warnings
    out, seen = {}, set()
    for inst in instances:
        timer = getattr(inst, "timer", None)
        counter = getattr(getattr(timer, "inner", timer), "envelope", None)
        if not isinstance(counter, EnvelopeCounter) or id(counter) in seen:
            continue
        seen.add(id(counter))
        out[inst.name] = counter
        if counter.outside_any:
            warnings.warn(report_text(name, counter), EnvelopeWarning, stacklevel=3)
    return out
