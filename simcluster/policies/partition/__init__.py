"""Partition policies: how one model is cut over the (possibly different) GPUs of one group.

A policy answers ``partition(problem) -> Partition`` for a :class:`Problem` (model, devices,
link, and the :class:`TargetBatch` R the split is tuned for). Registered (``PARTITIONS``):

* ``equal`` — vLLM's split: 1/N of heads, FFN columns and KV per GPU (:mod:`.search`);
* ``hexgen_tp`` — heads with their KV in proportion to capability, one TP group (:mod:`.search`);
* ``hexgen`` — HexGen's asymmetric pipeline: stages of their own TP degree and layer count,
  chosen by a DP over layer splits (:mod:`.hexgen`);
* ``hels`` — the Hels extended abstract's step-wise min-max search, alone (:mod:`.search`);
* ``hels_enhanced`` — simcluster's enhanced search (three KV rules, repair, best seen).

Every policy takes the problem's ``recompute`` option (KV partial-store-and-recompute,
:mod:`.problem`). :func:`partition` builds the problem and runs a policy.
"""

from __future__ import annotations

from typing import Sequence

from simcluster.cost.model import CostModel
from simcluster.hardware import DeviceSpec, LinkSpec
from simcluster.models import ModelSpec
from simcluster.policies.partition.problem import (KV_RULES, Candidate, DeviceFit, Problem,
                                                   TargetBatch)
from simcluster.policies.partition.result import Partition
from simcluster.policies.partition.search import Equal, Hels, HelsEnhanced, HexGenTP
from simcluster.policies.partition.hexgen import HexGen, split_layers
from simcluster.policies.registry import PARTITIONS

__all__ = ["KV_RULES", "Candidate", "DeviceFit", "Equal", "Hels", "HelsEnhanced", "HexGen",
           "HexGenTP", "Partition", "Problem", "TargetBatch", "partition", "split_layers"]


def partition(policy: str, model: ModelSpec, devices: Sequence[DeviceSpec],
              link: LinkSpec | None, *, batch: TargetBatch | None = None,
              cost_model: CostModel | None = None, memory_utilization: float = 0.9,
              max_batched_tokens: int = 8192, max_num_seqs: int = 256, recompute: float = 0.0,
              **params) -> Partition:
    """Split ``model`` over ``devices`` with the registered ``policy`` (``equal``,
    ``hexgen_tp``, ``hexgen``, ``hels``, ``hels_enhanced``), tuned for ``batch``, with a share
    ``recompute`` of the KV recomputed where that saves memory; ``params`` go to the policy."""
    problem = Problem(model, devices, link, batch or TargetBatch(), cost_model,
                      memory_utilization=memory_utilization,
                      max_batched_tokens=max_batched_tokens, max_num_seqs=max_num_seqs,
                      recompute=recompute)
    return PARTITIONS.create(policy, **params).partition(problem)
