"""Kernel accounting per engine: which kernels one forward launches, and how it is executed.

Two engines running the same model launch different kernels. A fused engine (vLLM, SGLang,
TensorRT-LLM) runs one QKV and one gate-up GEMM, fuses RMSNorm with the residual add and the
rotary embedding into neighbouring kernels, and moves each activation about once; Hugging Face
transformers' eager forward runs q/k/v and gate/up as separate ``nn.Linear`` calls, an RMSNorm
of eight kernels in float32, a rotary embedding of ten, and a copy for the attention output. A
:class:`KernelAccounting` says which, as data (``hwspecs/engines/kernels/<name>.toml``;
bundled: ``fused`` and ``hf-eager``), and :meth:`KernelAccounting.layer_ops` lists the
operators one layer runs over ``tokens`` rows for the cost model to time.

Each operator carries its *launches* and their launch class (``linear``, ``sdpa``,
``elementwise``, ``cat``, ``copy``, ``norm``: rows of the calibration's ``launch`` table). How
launches cost is the :class:`ExecutionMode` of the iteration kind:

``graphs``
    the forward is one CUDA-graph replay: the kernels' device times as measured under graph
    replay (the kernel tables' own mode), plus one graph launch.
``eager``
    every launch is dispatched from Python: the host issues launches at its dispatch rate while
    the device runs them, so a forward takes ``max(device time, host dispatch time)`` per
    pipeline stage (the two overlap; over a repeated layer pattern the slower one sets the
    pace), plus one launch latency before the first kernel.
``piecewise``
    graphs between attention calls (vLLM's piecewise capture): the attention launches and one
    graph launch per layer are dispatched eagerly.

The ``grouped`` elementwise scheme (the fused default) is the accounting the cost model always
had: one line of norms, activation, rotary and residual adds at their fewest bytes, six
kernels per layer, timed with the mean slowdown of the fused kinds.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from simcluster.calibration import LAUNCH_CLASSES
from simcluster.errors import InputError
from simcluster.paths import data_dir

EXECUTION_MODES = ("graphs", "eager", "piecewise")


@dataclass(frozen=True)
class ExecutionMode:
    """How each iteration kind runs: ``prefill`` (iterations with prompt tokens) and
    ``decode`` (decode-only iterations) each ``graphs``, ``eager`` or ``piecewise``."""

    prefill: str = "graphs"
    decode: str = "graphs"

    def __post_init__(self):
        for kind in ("prefill", "decode"):
            mode = getattr(self, kind)
            if mode not in EXECUTION_MODES:
                raise InputError(f"execution mode {mode!r} for {kind}; expected one of "
                                 f"{', '.join(EXECUTION_MODES)}", field=f"execution.{kind}")

    @classmethod
    def of(cls, value) -> "ExecutionMode":
        """From a mode name (both kinds), a mapping or an ExecutionMode."""
        if isinstance(value, ExecutionMode):
            return value
        if isinstance(value, str):
            return cls(value, value)
        if isinstance(value, dict):
            bad = set(value) - {"prefill", "decode"}
            if bad:
                raise InputError(f"unknown keys {sorted(bad)}; execution takes prefill and "
                                 "decode", field="execution")
            return cls(**value)
        raise InputError(f"expected a mode name or a table, got {value!r}", field="execution")

    def of_kind(self, prefill: bool) -> str:
        return self.prefill if prefill else self.decode


@dataclass(frozen=True)
class KernelAccounting:
    """Which kernels a layer launches (see module docstring). Flags:

    ``fuse_qkv``/``fuse_gate_up``: one GEMM for q, k, v (for gate and up) or separate ones;
    ``elementwise``: ``grouped`` (one minimal-traffic line, the fused engines) or ``separate``
    (each op timed with its own measured kind); ``norm``: the kind of the two RMSNorms
    (``rmsnorm`` fused, ``rmsnorm_hf`` transformers' eight-kernel fp32 one); ``rotary``:
    ``fused`` (into attention) or ``rotary_hf``; ``attn_output_copy``: a contiguous copy of the
    attention output (transformers' ``transpose(1, 2).contiguous()``); ``kv_cache``: ``write``
    (paged, new tokens only: counted in the attention) or ``concat`` (``DynamicCache``: every
    step copies the whole cache); ``final_norm``: a norm over every token before the LM head;
    ``gemm_layout``: the weight layout the linears read (``nt``: ``F.linear``).
    ``norm_launches``/``rotary_launches``: kernels of one norm / one rotary application.
    ``host_overhead_per_layer_s``: host time of one layer's Python beyond its launches (module
    calls, views, cache bookkeeping), paid in eager execution.
    """

    name: str = "fused"
    fuse_qkv: bool = True
    fuse_gate_up: bool = True
    elementwise: str = "grouped"
    norm: str = "rmsnorm"
    rotary: str = "fused"
    attn_output_copy: bool = False
    kv_cache: str = "write"
    final_norm: bool = False
    gemm_layout: str = "nt"
    norm_launches: int = 1
    rotary_launches: int = 0
    rotary_table_launches: int = 0
    sampling_launches: int = 2
    host_overhead_per_layer_s: float = 0.0
    description: str = field(default="", compare=False)

    def __post_init__(self):
        checks = {"elementwise": ("grouped", "separate"), "norm": ("rmsnorm", "rmsnorm_hf"),
                  "rotary": ("fused", "rotary_hf"), "kv_cache": ("write", "concat"),
                  "gemm_layout": ("nt", "nn")}
        for key, allowed in checks.items():
            if getattr(self, key) not in allowed:
                raise InputError(f"{key} = {getattr(self, key)!r}; expected one of "
                                 f"{', '.join(allowed)}", field=f"kernels.{key}")
        for key in ("fuse_qkv", "fuse_gate_up", "attn_output_copy", "final_norm"):
            if not isinstance(getattr(self, key), bool):     # ("no" would read as true)
                raise InputError(f"{key} = {getattr(self, key)!r}; expected true or false",
                                 field=f"kernels.{key}")
        for key in ("norm_launches", "rotary_launches", "rotary_table_launches",
                    "sampling_launches"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise InputError(f"{key} = {v!r}; expected a whole number of kernels >= 0",
                                 field=f"kernels.{key}")
        v = self.host_overhead_per_layer_s
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:
            raise InputError(f"host_overhead_per_layer_s = {v!r}; expected seconds in [0, 1)",
                             field="kernels.host_overhead_per_layer_s")

    # -- the operators of one layer ---------------------------------------------------------
    def gemms(self, rank, tokens):
        """(name, m, n, k) of one layer's projection GEMMs for a TP rank's slice."""
        hd, h = rank.head_dim, rank.hidden
        q, kv = rank.heads * hd, rank.kv_heads * hd
        ffn = rank.ffn
        out = ([("qkv", tokens, q + 2 * kv, h)] if self.fuse_qkv else
               [("q_proj", tokens, q, h), ("k_proj", tokens, kv, h), ("v_proj", tokens, kv, h)])
        out.append(("attn_out", tokens, h, q))
        if rank.gated:
            out += ([("ffn_up", tokens, 2 * ffn, h)] if self.fuse_gate_up else
                    [("gate_proj", tokens, ffn, h), ("up_proj", tokens, ffn, h)])
        else:
            out.append(("ffn_up", tokens, ffn, h))
        out.append(("ffn_down", tokens, h, ffn))
        return [g for g in out if g[2] > 0 and g[3] > 0]

    def elementwise_ops(self, rank, tokens):
        """(name, kind, bytes, row length, launches, launch class) of one layer's elementwise
        operators (``grouped``: one line, kind None = the mean of the fused kinds)."""
        b, h, hd = rank.dtype_bytes, rank.hidden, rank.head_dim
        if self.elementwise == "grouped":
            byts, kernels = rank.elementwise_bytes(tokens)
            return [("norm_act_residual", None, byts, h, kernels, "elementwise")]
        width = (rank.heads + rank.kv_heads) * hd
        norm_class = "norm" if self.norm == "rmsnorm" else "elementwise"
        ops = [("input_norm", self.norm, b * (2 * tokens * h + h), h, self.norm_launches,
                norm_class),
               ("post_norm", self.norm, b * (2 * tokens * h + h), h, self.norm_launches,
                norm_class),
               ("residual_add", "residual_add", 2 * b * 3 * tokens * h, h, 2, "elementwise")]
        act = (3 if rank.gated else 2) * tokens * rank.ffn * b
        ops.append(("activation", "silu_mul" if rank.gated else "residual_add", act,
                    rank.ffn, 2 if rank.gated else 1, "elementwise"))
        if self.rotary == "rotary_hf" and rank.heads:
            ops.append(("rotary", "rotary_hf", b * (4 * tokens * width + 2 * tokens * hd),
                        width, self.rotary_launches, "elementwise"))
        if self.attn_output_copy and rank.heads:
            ops.append(("attn_output_copy", "residual_add", b * 2 * tokens * rank.heads * hd,
                        h, 1, "copy"))
        return ops

    def layer_launches(self, rank, prefill: bool, decode: bool) -> dict[str, int]:
        """Launches of one layer by launch class (for the eager host-dispatch time)."""
        out = {c: 0 for c in LAUNCH_CLASSES}
        out["linear"] = len(self.gemms(rank, 1))
        for _, _, _, _, n, cls in self.elementwise_ops(rank, 1):
            out[cls] += n
        if self.rotary == "rotary_hf":      # two of rotate_half's kernels are concatenations
            out["elementwise"] -= 2
            out["cat"] += 2
        if rank.heads:
            out["sdpa"] += int(prefill) + int(decode)
            out["cat" if self.kv_cache == "concat" else "copy"] += 2
        return out

    def extra_launches(self, first_stage: bool, last_stage: bool, samples: bool) -> dict:
        """Launches outside the layers: embedding, rotary table, final norm, LM head,
        sampling."""
        out = {c: 0 for c in LAUNCH_CLASSES}
        if first_stage:
            out["elementwise"] += 1 + self.rotary_table_launches
        if last_stage:
            if self.final_norm:
                out["norm" if self.norm == "rmsnorm" else "elementwise"] += self.norm_launches
            if samples:
                out["linear"] += 1
                out["elementwise"] += self.sampling_launches
        return out


FUSED = KernelAccounting(description="fused engine (vLLM-like): QKV and gate-up GEMMs fused, "
                                     "norms/rotary/activation/residual at their fewest bytes, "
                                     "six elementwise kernels a layer")


def kernels_dir() -> Path:
    return data_dir("hwspecs") / "engines" / "kernels"


def list_accountings() -> list[str]:
    return sorted(p.stem for p in kernels_dir().glob("*.toml"))


def load_accounting(name_or_path="fused", _seen: tuple = ()) -> KernelAccounting:
    """A bundled accounting by name (``hwspecs/engines/kernels/<name>.toml``), a path, an
    accounting (returned as is) or a mapping of its fields. A file's ``base`` names the
    accounting it starts from (a chain of them: not a cycle)."""
    if isinstance(name_or_path, KernelAccounting):
        return name_or_path
    if isinstance(name_or_path, dict):
        return _from_table(dict(name_or_path), "<table>")
    p = Path(name_or_path)
    if not p.suffix:
        p = kernels_dir() / f"{name_or_path}.toml"
    if not p.exists():
        raise InputError(f"unknown kernel accounting {str(name_or_path)!r}; known: "
                         f"{', '.join(list_accountings()) or '(none)'}", field="kernels")
    if p.resolve() in _seen:
        raise InputError(f"base {str(name_or_path)!r} leads back to this file: a cycle",
                         file=str(_seen[-1]), field="base")
    try:
        data = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as err:
        raise InputError(f"not valid TOML: {err}", file=str(p)) from None
    return _from_table(data, str(p), default_name=p.stem, seen=_seen + (p.resolve(),))


def _from_table(data: dict, where: str, default_name: str = "custom",
                seen: tuple = ()) -> KernelAccounting:
    known = {f.name for f in fields(KernelAccounting)}
    base = data.pop("base", None)
    unknown = set(data) - known
    if unknown:
        raise InputError(f"unknown keys {sorted(unknown)}; known: {sorted(known)}", file=where,
                         field="kernels")
    start = load_accounting(base, seen).__dict__ if base else {}
    values = {**start, "name": default_name, **data}
    try:
        return KernelAccounting(**values)
    except InputError as err:
        raise InputError(err.reason, file=where, field=err.field) from None
    except TypeError as err:
        raise InputError(str(err), file=where, field="kernels") from None
