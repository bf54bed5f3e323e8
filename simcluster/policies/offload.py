"""Offload policies: does a request whose prompt is done move to the decode pool?

Asked by a disaggregated cluster (:mod:`simcluster.cluster.pools`) when a prefill instance
samples a request's first token. ``all``; ``min_output`` (only requests with at least
``min_output_tokens`` left to generate); ``max_context`` (only requests whose final KV length
stays below ``max_context_tokens``, e.g. to keep very long contexts on the GPU); ``pool_room``
(only while an active decode instance has a free slot, else the request keeps decoding where it
was prefilled). A policy with a ``bind(cluster)`` method is bound to the cluster. One that
decides from the request alone says so with ``reads_pool = False``: the cluster then does not
bring the decode pool's runs up to date before asking it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from simcluster.policies.registry import OFFLOADS

if TYPE_CHECKING:
    from simcluster.serving import Request


@OFFLOADS.register("all")
class OffloadAll:
    """Every request moves to the decode pool once its prompt is done."""

    reads_pool = False

    def __call__(self, req: Request) -> bool:
        return True


@OFFLOADS.register("min_output")
class OffloadMinOutput:
    """Only requests with at least ``min_output_tokens`` left to generate move."""

    reads_pool = False

    def __init__(self, min_output_tokens: int = 2):
        if min_output_tokens < 1:
            raise ValueError(f"min_output_tokens must be >= 1, got {min_output_tokens}")
        self.min_output_tokens = min_output_tokens

    def __call__(self, req: Request) -> bool:
        return req.remaining_output >= self.min_output_tokens


@OFFLOADS.register("max_context")
class OffloadMaxContext:
    """Only requests whose final KV length stays below ``max_context_tokens`` move (very long
    contexts keep decoding where they were prefilled)."""

    reads_pool = False

    def __init__(self, max_context_tokens: int = 32768):
        if max_context_tokens < 1:
            raise ValueError(f"max_context_tokens must be >= 1, got {max_context_tokens}")
        self.max_context_tokens = max_context_tokens

    def __call__(self, req: Request) -> bool:
        return req.max_kv_tokens < self.max_context_tokens


@OFFLOADS.register("pool_room")
class OffloadPoolRoom:
    """Offload while the active decode instances have a free slot (fewer than ``slots``
    requests each, default their ``max_num_seqs``) left after the hand-offs already on their
    way (``cluster.in_flight``: shipping, or held by the decode router); otherwise the request
    decodes where it was prefilled. (Counting only what has arrived let every request of one
    prefill batch take the same last slot.)"""

    def __init__(self, slots: int | None = None):
        if slots is not None and slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        self.slots = slots
        self.cluster, self.pool = None, ()

    def bind(self, cluster):
        self.cluster, self.pool = cluster, cluster.decode_pool
        return self

    def __call__(self, req: Request) -> bool:
        free = sum(max(0, (self.slots or inst.config.max_num_seqs) - len(inst.running)
                       - len(inst.waiting)) for inst in self.pool if inst.active)
        return free > getattr(self.cluster, "in_flight", 0)
