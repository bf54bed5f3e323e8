"""Whether a parallel layout can cut a model: TP, EP, DP and PP checked for divisibility.

The rules are those of the serving engines the layouts stand for (vLLM, SGLang):

* ``pp``: at most one stage per layer.
* ``tp`` with the equal split: it divides the attention heads; KV heads are split (tp divides
  them) or replicated (they divide tp); it divides the dense MLP width, and, where experts are
  sharded by TP (``ep = 1``), the expert and shared-expert widths.
* ``ep``: only for a mixture of experts; 1, or every rank of the stage (``ep = tp x dp``: vLLM's
  ``--enable-expert-parallel`` and SGLang's EP MoE make the expert-parallel group the whole
  data- and tensor-parallel group); it divides the routed experts.
* ``dp`` (attention data parallelism inside one replica): only beside expert parallelism over
  the stage, as both engines run it (a dense model's data parallelism is more replicas:
  ``count``).
* latent attention, mixtures of experts, ``ep`` and ``dp``: identical devices with the equal
  split (the heterogeneous partitions are for dense models).

A violation raises :class:`ParallelismError` naming the degree (``tp``, ``ep``, ``dp``,
``pp``) and the model dimension it does not divide.
"""

from __future__ import annotations

from simcluster.cost.layout import Layout
from simcluster.errors import InputError
from simcluster.models import ModelSpec


class ParallelismError(InputError):
    """A parallel layout that cannot cut this model; ``field`` names the degree."""


def _fail(field: str, message: str):
    raise ParallelismError(message, field=field)


def check_parallel(model: ModelSpec, layout: Layout) -> None:
    """Raise :class:`ParallelismError` if ``layout`` cannot serve ``model`` (see module)."""
    tp, pp, ep, dp = layout.tp, layout.pp, layout.ep, layout.dp
    if pp > model.num_layers:
        _fail("pp", f"pp={pp} stages > {model.num_layers} layers of {model.name}")
    special = model.moe is not None or model.mla is not None or ep > 1 or dp > 1
    if special and not layout.is_uniform:
        _fail("devices", f"{model.name}: mixtures of experts, latent attention, ep and dp need "
                         "identical devices with the equal split (got "
                         f"{layout.describe()})")
    if layout.is_uniform and tp > 1:
        _check_tp(model, tp, ep)
    if ep > 1 or dp > 1:
        _check_ep_dp(model, tp, ep, dp)


def _check_tp(model: ModelSpec, tp: int, ep: int) -> None:
    if model.num_heads % tp:
        _fail("tp", f"tp={tp} does not divide the {model.num_heads} attention heads of "
                    f"{model.name}")
    kv = model.num_kv_heads
    if model.mla is None and kv % tp and tp % kv:
        _fail("tp", f"tp={tp} neither divides nor is a multiple of the {kv} KV heads of "
                    f"{model.name}")
    if model.num_dense_ffn_layers and model.ffn_size % tp:
        _fail("tp", f"tp={tp} does not divide the MLP width {model.ffn_size} of {model.name}")
    moe = model.moe
    if moe is not None and ep == 1 and moe.expert_ffn_size % tp:
        _fail("tp", f"tp={tp} does not divide the expert width {moe.expert_ffn_size} of "
                    f"{model.name} (expert parallelism, ep = tp x dp, would)")
    if moe is not None and moe.shared_ffn_size % tp:
        _fail("tp", f"tp={tp} does not divide the shared-expert width {moe.shared_ffn_size} "
                    f"of {model.name}")


def _check_ep_dp(model: ModelSpec, tp: int, ep: int, dp: int) -> None:
    world = tp * dp
    if model.moe is None:
        what = "ep" if ep > 1 else "dp"
        _fail(what, f"{what}={ep if ep > 1 else dp}: expert parallelism and attention data "
                    f"parallelism are for mixtures of experts; {model.name} is dense (serve "
                    "more replicas with count = N instead of dp)")
    if ep not in (1, world):
        _fail("ep", f"ep={ep} must be 1 or every rank of the stage, tp x dp = {world} (the "
                    "expert-parallel group is the whole data/tensor-parallel group in vLLM and "
                    "SGLang)")
    if dp > 1 and ep != world:
        _fail("dp", f"dp={dp} (attention data parallelism) needs expert parallelism over the "
                    f"stage: ep = tp x dp = {world}, got ep={ep}")
    if model.moe.num_experts % ep:
        _fail("ep", f"ep={ep} does not divide the {model.moe.num_experts} routed experts of "
                    f"{model.name}")
