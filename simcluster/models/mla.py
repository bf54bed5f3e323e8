"""Multi-head latent attention (MLA, DeepSeek-V2/V3) as plain data and its per-layer counts.

MLA compresses keys and values into one latent vector per token: ``kv_a`` projects the hidden
state to ``kv_lora_rank`` latent dims plus ``qk_rope_head_dim`` rotary key dims (shared by all
heads), and that ``kv_lora_rank + qk_rope_head_dim`` vector is all the KV cache keeps per token
and layer. ``kv_b`` expands the latent into each head's non-rotary key (``qk_nope_head_dim``)
and value (``v_head_dim``). Queries go through a low-rank ``q_a -> q_b`` pair of rank
``q_lora_rank`` (or one ``hidden -> heads x (nope + rope)`` matrix when it is None).

Serving engines run MLA two ways, and the cost model follows them (vLLM's and SGLang's MLA
backends, FlashMLA):

* prefill: *expanded* -- ``kv_b`` up-projects the latent of every key token (context and new),
  then ordinary multi-head attention with query/key dim ``nope + rope`` and value dim ``v``;
* decode: *absorbed* -- ``kv_b``'s key half is folded into the query and its value half into
  the output, so each head attends over the latent itself, ``kv_lora + rope`` dims for scores
  and ``kv_lora`` for values, reading the latent cache once for all heads (MQA-like).
"""

from __future__ import annotations

from dataclasses import dataclass

from simcluster.errors import InputError


@dataclass(frozen=True)
class MLASpec:
    """The latent-attention shapes of a config (see module docstring)."""

    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int
    q_lora_rank: int | None = None

    def __post_init__(self) -> None:
        for f in ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim") + (
                ("q_lora_rank",) if self.q_lora_rank is not None else ()):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InputError(f"expected a whole number >= 1, got {v!r}", field=f"mla.{f}")

    @property
    def qk_head_dim(self) -> int:
        """Query/key dims of one head in the expanded form: non-rotary plus rotary."""
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def latent_dim(self) -> int:
        """Dims cached per token and layer: the latent plus the shared rotary key."""
        return self.kv_lora_rank + self.qk_rope_head_dim

    # ------------------------------------------------------------------ weights of one layer
    def replicated_params(self, hidden: int) -> int:
        """Weights every tensor-parallel rank holds whole (vLLM replicates them): ``q_a``,
        ``kv_a`` and the two latent norms."""
        q_a = hidden * self.q_lora_rank + self.q_lora_rank if self.q_lora_rank else 0
        return q_a + hidden * self.latent_dim + self.kv_lora_rank

    def per_head_params(self, hidden: int) -> int:
        """Weights that split by attention head: ``q_b`` (or the direct ``q``), ``kv_b`` and
        the output projection, for one head."""
        q_in = self.q_lora_rank or hidden
        return (q_in * self.qk_head_dim
                + self.kv_lora_rank * (self.qk_nope_head_dim + self.v_head_dim)
                + self.v_head_dim * hidden)

    def params(self, hidden: int, heads: int) -> int:
        return self.replicated_params(hidden) + heads * self.per_head_params(hidden)

    def matmul_weights_per_token(self, hidden: int, heads: int) -> int:
        """Projection weights one token multiplies through (expanded form, norms excluded)."""
        q_a = hidden * self.q_lora_rank if self.q_lora_rank else 0
        return (q_a + hidden * self.latent_dim
                + heads * ((self.q_lora_rank or hidden) * self.qk_head_dim
                           + self.kv_lora_rank * (self.qk_nope_head_dim + self.v_head_dim)
                           + self.v_head_dim * hidden))

    def attention_flops_per_pair(self, heads: float) -> float:
        """Score and value FLOPs of one (query, key) pair, expanded form: 2 per multiply-add of
        ``q.k`` over ``nope + rope`` dims and of ``p.v`` over ``v`` dims, for ``heads`` heads."""
        return 2.0 * heads * (self.qk_head_dim + self.v_head_dim)

    def absorbed_flops_per_pair(self, heads: float) -> float:
        """The same in the absorbed (decode) form: scores over ``kv_lora + rope`` dims, values
        over ``kv_lora`` dims."""
        return 2.0 * heads * (self.latent_dim + self.kv_lora_rank)
