"""Scheduler and memory settings of one replica, as plain data."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InstanceConfig:
    """Scheduler and memory settings of a replica (vLLM's names where it has them)."""

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
        for name in ("block_size", "max_num_seqs", "max_batched_tokens", "max_steady_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"InstanceConfig.{name} must be >= 1, got {getattr(self, name)}")
