"""Scheduler and memory settings of one replica, as plain data."""

from __future__ import annotations

import math
from dataclasses import dataclass

from simcluster.errors import InputError

_WHOLE = ("block_size", "max_num_seqs", "max_batched_tokens", "max_steady_steps")


@dataclass(frozen=True)
class InstanceConfig:
    """Scheduler and memory settings of a replica (vLLM's names where it has them).

    Constructing one checks every field (InputError naming the field): whole numbers >= 1,
    ``memory_utilization`` in (0, 1], ``max_model_len`` None or >= 1.
    """

    block_size: int = 16
    max_num_seqs: int = 256
    max_batched_tokens: int = 8192
    chunked_prefill: bool = False
    memory_utilization: float = 0.9
    max_model_len: int | None = None      # default: the model's max_position
    max_steady_steps: int = 1_000_000     # cap on decode steps advanced in one event
    prefix_caching: bool = True           # vLLM v1's automatic prefix caching (needs a trace
                                          # with block hashes; see serving/prefix_cache.py)

    def __post_init__(self):
        for name in _WHOLE + ("max_model_len",) * (self.max_model_len is not None):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"expected a whole number >= 1, got {value!r}", field=name)
        for name in ("chunked_prefill", "prefix_caching"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"expected true or false, got {getattr(self, name)!r}",
                                 field=name)
        mu = self.memory_utilization
        if (isinstance(mu, bool) or not isinstance(mu, (int, float)) or not math.isfinite(mu)
                or not 0 < mu <= 1):
            raise InputError(f"expected a fraction of device memory in (0, 1], got {mu!r}",
                             field="memory_utilization")


def context_limit(model, config: InstanceConfig) -> int:
    """The longest request (prompt + output tokens) an instance of ``config`` serving
    ``model`` takes: ``max_model_len``, else the model's context length. InputError (field
    ``max_model_len``) when neither is known. (``max_model_len`` may exceed the model's
    trained context: a what-if, e.g. a RoPE-scaled variant, as vLLM allows with
    VLLM_ALLOW_LONG_MAX_MODEL_LEN.)"""
    stated = model.max_position
    if config.max_model_len is None:
        if stated is None:
            source = f" ({model.source})" if getattr(model, "source", "") else ""
            raise InputError(f"model {model.name}{source} states no context length (its config "
                             "has no max_position_embeddings); set max_model_len",
                             field="max_model_len")
        return stated
    return config.max_model_len
