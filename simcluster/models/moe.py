"""Mixture-of-experts FFN layers as plain data: what a config says about the experts.

A :class:`MoESpec` describes the FFN of a model's *MoE layers*: ``num_experts`` routed experts
of width ``expert_ffn_size`` (each a gated MLP like the dense one), of which each token uses
``experts_per_token`` (top-k routing by a ``hidden x num_experts`` router), plus optional
always-on *shared* experts of total width ``shared_ffn_size`` (DeepSeek: ``n_shared_experts x
moe_intermediate_size``; Qwen2-MoE: ``shared_expert_intermediate_size``). ``dense_layers``
lists the layer indices that keep a dense MLP of the model's ``ffn_size`` (DeepSeek-V3's first
three, Qwen's ``mlp_only_layers``). ``expert_dtype`` is the dtype the routed experts' weights
are stored in when it differs from the model's (GPT-OSS: MXFP4, 4.25 bits per weight).

Counts here are per layer and exact from the config: they feed the model's parameter count,
its weight bytes and its FLOPs per token (:class:`~simcluster.models.spec.ModelSpec`).
"""

from __future__ import annotations

from dataclasses import dataclass

from simcluster.errors import InputError, whole_number

#: Bytes per weight of the storage formats experts may use (MXFP4: 32 four-bit values share
#: one 8-bit scale, 17 bytes per 32 weights, OCP Microscaling spec v1.0).
EXPERT_DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "fp8": 1, "int8": 1, "int4": 0.5,
                      "mxfp4": 17 / 32}


@dataclass(frozen=True)
class MoESpec:
    """The routed-expert FFN of a model's MoE layers (see module docstring)."""

    num_experts: int
    experts_per_token: int
    expert_ffn_size: int
    shared_ffn_size: int = 0
    dense_layers: tuple[int, ...] = ()
    router_bias: bool = False
    expert_bias: bool = False
    expert_dtype: str | None = None

    def __post_init__(self) -> None:
        whole_number(self.num_experts, "moe.num_experts", 2)
        whole_number(self.experts_per_token, "moe.experts_per_token")
        whole_number(self.expert_ffn_size, "moe.expert_ffn_size")
        whole_number(self.shared_ffn_size, "moe.shared_ffn_size", 0)
        if self.experts_per_token > self.num_experts:
            raise InputError(f"{self.experts_per_token} experts per token > {self.num_experts} "
                             "experts", field="moe.experts_per_token")
        layers = tuple(self.dense_layers)
        for i in layers:
            whole_number(i, "moe.dense_layers", 0)
        if len(set(layers)) != len(layers):
            raise InputError(f"repeated layer index in {list(layers)}", field="moe.dense_layers")
        object.__setattr__(self, "dense_layers", tuple(sorted(layers)))
        if self.expert_dtype is not None and self.expert_dtype not in EXPERT_DTYPE_BYTES:
            raise InputError(f"expected one of {', '.join(EXPERT_DTYPE_BYTES)}, got "
                             f"{self.expert_dtype!r}", field="moe.expert_dtype")
        for f in ("router_bias", "expert_bias"):
            if not isinstance(getattr(self, f), bool):
                raise InputError(f"expected true or false, got {getattr(self, f)!r}",
                                 field=f"moe.{f}")

    # ------------------------------------------------------------------ per MoE layer
    def expert_params(self, hidden: int, gated: bool) -> int:
        """Weights (and biases) of one routed expert: 3 matrices if gated, else 2."""
        f, mats = self.expert_ffn_size, (3 if gated else 2)
        bias = ((mats - 1) * f + hidden) if self.expert_bias else 0
        return mats * hidden * f + bias

    def shared_params(self, hidden: int, gated: bool) -> int:
        """Weights of the shared experts of one layer (no biases in any released model)."""
        return (3 if gated else 2) * hidden * self.shared_ffn_size

    def router_params(self, hidden: int) -> int:
        """The router: a ``hidden x num_experts`` matrix (and a bias where there is one)."""
        return self.num_experts * (hidden + (1 if self.router_bias else 0))

    def ffn_matmul_weights_per_token(self, hidden: int, gated: bool) -> int:
        """Matmul weights one token multiplies through in one MoE layer: its k experts, the
        shared experts and the router (biases excluded)."""
        mats = 3 if gated else 2
        return (mats * hidden * (self.experts_per_token * self.expert_ffn_size
                                 + self.shared_ffn_size) + hidden * self.num_experts)

    def moe_layer_count(self, num_layers: int) -> int:
        return num_layers - sum(1 for i in self.dense_layers if i < num_layers)
