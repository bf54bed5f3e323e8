"""Per-iteration engine logs: the bring-your-own CSV format, read and checked.

One row per engine iteration (a forward pass and what surrounds it: scheduling, sampling,
bookkeeping), ``# key: value`` metadata lines first. The format is documented with examples in
``hwspecs/engines/README.md``; in short:

=========================  ========  =====================================================
column                     required  meaning
=========================  ========  =====================================================
``iteration_s``            yes       wall time of the iteration, seconds
``prefill_tokens``         yes       prompt tokens computed in it (all chunks)
``decode_seqs``            yes       sequences that decoded one token in it
``decode_context_tokens``  yes*      KV tokens those sequences attend to, each one's new
                                     token included (*may be 0 when decode_seqs is)
``prefill_seqs``           no        prompts (chunks) in it; default 1 if prefill_tokens
``prefill_context_tokens`` no        KV tokens already cached for those prompts (chunked
                                     prefill, prefix hits); default 0
``samples``                no        tokens sampled; default prefill_seqs + decode_seqs
``prefill_detail``         no        ``tokens/context;...`` per prompt chunk (exact shapes)
``phase``                  no        a label (profiling group); used to spot transients
``start_s``                no        iteration start, seconds (any origin)
``kv_blocks``              no        KV blocks in use (informational)
=========================  ========  =====================================================
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from simcluster.errors import InputError, value_text

REQUIRED = ("iteration_s", "prefill_tokens", "decode_seqs")
OPTIONAL = ("decode_context_tokens", "prefill_seqs", "prefill_context_tokens", "samples",
            "prefill_detail", "phase", "start_s", "kv_blocks", "waiting")


def read_metadata(path) -> dict:
    """The ``# key: value`` lines at the top of a CSV."""
    meta = {}
    with open(path) as f:
        for line in f:
            if not line.startswith("#"):
                break
            key, sep, value = line[1:].partition(":")
            if sep:
                meta[key.strip()] = value.strip()
    return meta


@dataclass
class IterationLog:
    """A checked per-iteration table and its metadata."""

    frame: pd.DataFrame
    meta: dict = field(default_factory=dict)
    source: str = ""

    def chunks(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Prompt chunk sizes and their cached context for row ``i``: from ``prefill_detail``
        when present, else ``prefill_tokens`` split evenly over ``prefill_seqs`` (context
        split the same way)."""
        r = self.frame.iloc[i]
        det = r.get("prefill_detail", "")
        if isinstance(det, str) and det:
            pairs = [p.split("/") for p in det.split(";") if p]
            return (np.array([int(a) for a, _ in pairs], dtype=np.int64),
                    np.array([int(b) for _, b in pairs], dtype=np.int64))
        n, tok = int(r.prefill_seqs), int(r.prefill_tokens)
        if n == 0 or tok == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        sizes = np.full(n, tok // n, dtype=np.int64)
        sizes[: tok % n] += 1
        ctx = np.full(n, int(r.prefill_context_tokens) // n, dtype=np.int64)
        ctx[: int(r.prefill_context_tokens) % n] += 1
        return sizes, ctx


def read_iterations(path) -> IterationLog:
    """Read and check a per-iteration CSV (see module docstring)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InputError("no such engine log", file=str(path)) from None
    meta = read_metadata(path)
    df = pd.read_csv(io.StringIO(text), comment="#", keep_default_na=False,
                     na_values={"iteration_s": [""]})
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise InputError(f"missing columns {missing}; required: {list(REQUIRED)}",
                         file=str(path))
    if "decode_context_tokens" not in df.columns:
        if (df.decode_seqs > 0).any():
            raise InputError("decode_seqs > 0 needs decode_context_tokens (the KV tokens the "
                             "decoding sequences attend to)", file=str(path),
                             field="decode_context_tokens")
        df["decode_context_tokens"] = 0
    if "prefill_seqs" not in df.columns:
        df["prefill_seqs"] = (df.prefill_tokens > 0).astype(int)
    if "prefill_context_tokens" not in df.columns:
        df["prefill_context_tokens"] = 0
    if "samples" not in df.columns:
        df["samples"] = df.prefill_seqs + df.decode_seqs
    for c in ("iteration_s", "prefill_tokens", "decode_seqs", "decode_context_tokens",
              "prefill_seqs", "prefill_context_tokens", "samples"):
        vals = pd.to_numeric(df[c], errors="coerce")
        bad = vals.isna() | (vals < 0)
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise InputError(f"row {row + 1}: expected a number >= 0, got "
                             f"{value_text(df[c].iloc[row])}", file=str(path), field=c)
        df[c] = vals
    if (df.iteration_s <= 0).any():
        row = int(np.flatnonzero((df.iteration_s <= 0).to_numpy())[0])
        raise InputError(f"row {row + 1}: iteration_s must be > 0", file=str(path),
                         field="iteration_s")
    empty = (df.prefill_tokens == 0) & (df.decode_seqs == 0)
    if empty.any():
        raise InputError(f"row {int(np.flatnonzero(empty.to_numpy())[0]) + 1}: an iteration "
                         "with no prefill tokens and no decodes", file=str(path))
    for c in ("phase", "prefill_detail"):
        if c in df.columns:
            df[c] = df[c].astype(str).replace("nan", "")
    return IterationLog(df.reset_index(drop=True), meta, str(path))
