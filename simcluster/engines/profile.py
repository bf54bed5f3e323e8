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

Every cell is checked at its line of the file (counts whole and >= 0, times > 0), and the
counts of a row against each other: prompts with prompt tokens, samples at most the
sequences, decoding sequences with at least one KV token each, ``prefill_detail`` adding up
to ``prefill_seqs`` chunks of ``prefill_tokens`` after ``prefill_context_tokens``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from simcluster.errors import InputError, value_text
from simcluster.workload._columns import commented_csv, numbers

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
    rows = commented_csv(text, str(path))
    df = pd.read_csv(io.StringIO(text), comment="#", keep_default_na=False,
                     na_values={"iteration_s": [""]})
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise InputError(f"missing columns {missing}; required: {list(REQUIRED)}",
                         file=str(path))
    df["iteration_s"] = numbers(df.iteration_s, rows, "iteration_s", integer=False, minimum=0,
                                expected="a time > 0 s")
    zero = df.iteration_s.to_numpy() == 0
    if zero.any():
        raise rows.error(int(np.argmax(zero)), "iteration_s", "expected a time > 0 s, found 0")
    for c in ("prefill_tokens", "decode_seqs", "decode_context_tokens", "prefill_seqs",
              "prefill_context_tokens", "samples"):
        if c in df.columns:         # (checked before the defaults are derived from them)
            df[c] = numbers(df[c], rows, c, integer=True, minimum=0,
                            expected="a whole number >= 0")
    if "decode_context_tokens" not in df.columns:
        if (df.decode_seqs > 0).any():
            raise InputError("decode_seqs > 0 needs decode_context_tokens (the KV tokens the "
                             "decoding sequences attend to)", file=str(path),
                             field="decode_context_tokens")
        df["decode_context_tokens"] = 0
    if "prefill_seqs" not in df.columns:
        df["prefill_seqs"] = (df.prefill_tokens > 0).astype(np.int64)
    if "prefill_context_tokens" not in df.columns:
        df["prefill_context_tokens"] = 0
    if "samples" not in df.columns:
        df["samples"] = df.prefill_seqs + df.decode_seqs
    _check_counts(df, rows)
    for c in ("phase", "prefill_detail"):
        if c in df.columns:
            df[c] = df[c].astype(str).replace("nan", "")
    if "prefill_detail" in df.columns:
        _check_detail(df, rows)
    return IterationLog(df.reset_index(drop=True), meta, str(path))


def _check_counts(df: pd.DataFrame, rows) -> None:
    """Counts that contradict each other: an empty iteration, prompt tokens without prompts
    (or the reverse), more samples than sequences."""
    pt, ps = df.prefill_tokens.to_numpy(), df.prefill_seqs.to_numpy()
    ds, dc = df.decode_seqs.to_numpy(), df.decode_context_tokens.to_numpy()
    for bad, column, what in (
            ((pt == 0) & (ds == 0), None, "an iteration with no prefill tokens and no decodes"),
            ((pt > 0) != (ps > 0), "prefill_seqs", "prefill_seqs and prefill_tokens must be "
             "both 0 or both >= 1"),
            (ps > pt, "prefill_seqs", "more prompts than prompt tokens"),
            ((ds > 0) & (dc < ds), "decode_context_tokens", "fewer KV tokens than decoding "
             "sequences (each attends to its new token at least)"),
            (df.samples.to_numpy() > ps + ds, "samples", "more tokens sampled than "
             "prefill_seqs + decode_seqs")):
        if bad.any():
            pos = int(np.argmax(bad))
            raise rows.error(pos, column, what)


def _check_detail(df: pd.DataFrame, rows) -> None:
    """``prefill_detail``: ``tokens/context`` pairs of whole numbers, one a prompt chunk,
    adding up to the row's ``prefill_seqs`` and ``prefill_tokens``."""
    for pos, det in enumerate(df.prefill_detail.tolist()):
        if not det:
            continue
        try:
            pairs = [tuple(int(x) for x in p.split("/")) for p in det.split(";") if p]
            ok = all(len(q) == 2 and q[0] >= 1 and q[1] >= 0 for q in pairs)
        except ValueError:
            ok = False
        if not ok:
            raise rows.error(pos, "prefill_detail", "expected 'tokens/context' pairs of "
                             f"whole numbers joined by ';' (e.g. '952/2048;1096/0'), found "
                             f"{value_text(det)}")
        r = df.iloc[pos]
        tokens, context = sum(q[0] for q in pairs), sum(q[1] for q in pairs)
        if (len(pairs), tokens, context) != (r.prefill_seqs, r.prefill_tokens,
                                             r.prefill_context_tokens):
            raise rows.error(pos, "prefill_detail", f"{len(pairs)} chunks of {tokens} tokens "
                             f"after {context} cached, where the row says prefill_seqs "
                             f"{r.prefill_seqs}, prefill_tokens {r.prefill_tokens}, "
                             f"prefill_context_tokens {r.prefill_context_tokens}")
