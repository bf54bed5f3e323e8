"""Block hashes of prompts: the optional ``hash_ids`` column and its block size.

A trace may say which prompts share a prefix the way Mooncake's traces do: ``hash_ids`` lists,
for each request, one id per ``hash_block_tokens``-token block of its prompt, in order (the last
block may be partial). Equal ids at the same position mean the same block *after the same
prefix* -- Mooncake remaps each block's hash of (prefix, tokens) to a small integer, as vLLM
keys a KV block by the hash chain of its parent and its tokens. ``hash_block_tokens`` is the
block size those ids were made with: 512 for Mooncake's traces.

In the canonical trace format ``hash_ids`` is an optional column (a JSON list per request in
JSON Lines and Parquet; space-separated integers in a CSV cell) with a ``hash_block_tokens``
column holding the block size (the same on every row). :func:`normalise_hash_ids` checks them.
"""

from __future__ import annotations

import numbers

import numpy as np

from simcluster.errors import InputError

#: The extras column that carries the block hashes, and the one that carries their block size.
HASH_COLUMN = "hash_ids"
BLOCK_COLUMN = "hash_block_tokens"
#: Mooncake's traces hash prompts in blocks of 512 tokens (FAST'25 release README).
MOONCAKE_BLOCK_TOKENS = 512


def _ids(value, i: int) -> tuple[int, ...]:
    if isinstance(value, str):
        parts = value.split()
        if not all(p.isdigit() for p in parts):
            raise InputError(f"request {i}: expected space-separated whole numbers, got "
                             f"{value[:40]!r}", field=HASH_COLUMN)
        return tuple(int(p) for p in parts)
    if isinstance(value, float) and value != value:        # NaN: a missing cell
        return ()
    try:
        items = list(value)
    except TypeError:
        raise InputError(f"request {i}: expected a list of block ids, got {value!r}",
                         field=HASH_COLUMN) from None
    out = []
    for x in items:
        if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Integral) or x < 0:
            raise InputError(f"request {i}: expected block ids that are whole numbers >= 0, "
                             f"found {x!r}", field=HASH_COLUMN)
        out.append(int(x))
    return tuple(out)


def normalise_hash_ids(values, prompt_tokens: np.ndarray, block_tokens) -> np.ndarray:
    """The ``hash_ids`` column as an object array of tuples of ints, checked: whole numbers
    >= 0, at most one id per ``block_tokens`` tokens of the prompt (rounded up)."""
    if isinstance(block_tokens, bool) or not isinstance(block_tokens, numbers.Integral) \
            or block_tokens < 1:
        raise InputError(f"block hashes need their block size in tokens (a whole number >= "
                         f"1), got {block_tokens!r}", field=BLOCK_COLUMN)
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        ids = _ids(v, i)
        most = -(-int(prompt_tokens[i]) // int(block_tokens))
        if len(ids) > most:
            raise InputError(f"request {i}: {len(ids)} block hashes for a prompt of "
                             f"{int(prompt_tokens[i])} tokens; expected at most {most} blocks "
                             f"of {block_tokens} tokens", field=HASH_COLUMN)
        out[i] = ids
    return out


def block_tokens_column(values) -> int:
    """The block size from a per-row ``hash_block_tokens`` column: one whole number."""
    vals = {v for v in np.asarray(values).tolist()}
    if len(vals) != 1:
        raise InputError(f"expected one block size on every row, found {sorted(vals)[:5]}",
                         field=BLOCK_COLUMN)
    v = vals.pop()
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return v


def encode_csv(ids) -> str:
    """A ``hash_ids`` entry as a CSV cell: space-separated ids."""
    return " ".join(str(int(x)) for x in ids)
