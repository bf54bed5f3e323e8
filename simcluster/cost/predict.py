"""Predictions from shapes: one operator or one iteration, singly or a CSV of them.

A shapes CSV has an ``op`` column. Operator rows (``gemm``, ``attn_prefill``, ``attn_decode``,
``elementwise``) carry ``device`` and the operator's shape columns (see
:meth:`CostModel.predict_op`). Iteration rows (``op = iteration``) carry ``model``, ``device``,
optional ``tp``, ``pp``, ``link``, and the batch: ``prefill_seqs`` sequences of
``prefill_tokens`` new tokens after ``prefill_context`` cached ones, plus ``decode_seqs``
sequences decoding over ``decode_context`` tokens each. Output rows add ``pred_time_s`` and
``provenance``.
"""

from __future__ import annotations

import math

import pandas as pd

from simcluster.cost import Batch, CostModel, Layout
from simcluster.errors import InputError
from simcluster.hardware import load_device, load_link
from simcluster.models import load_model

OP_FIELDS = {"gemm": ("m", "n", "k"),
             "attn_prefill": ("tokens", "context", "num_heads", "num_kv_heads", "head_dim",
                              "batch"),
             "attn_decode": ("batch", "kv_len", "num_heads", "num_kv_heads", "head_dim"),
             "elementwise": ("bytes", "kernels", "hidden")}
OPTIONAL = {"context", "batch", "kernels", "hidden"}


def iteration_batch(prefill_seqs=0, prefill_tokens=0, prefill_context=0, decode_seqs=0,
                    decode_context=0) -> Batch:
    return Batch(prefill_tokens=(int(prefill_tokens),) * int(prefill_seqs),
                 prefill_context=(int(prefill_context),) * int(prefill_seqs),
                 decode_context=(int(decode_context),) * int(decode_seqs))


def predict_iteration(cost: CostModel, model: str, device: str, tp=1, pp=1, link=None,
                      **batch) -> tuple[float, str]:
    dev = load_device(device)
    lk = load_link(link) if link else None
    layout = Layout.uniform(dev, tp=int(tp), pp=int(pp), link=lk)
    res = cost.iteration(load_model(model), layout, iteration_batch(**batch))
    return res.time_s, res.provenance


def _present(row, key):
    v = row.get(key)
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def predict_frame(cost: CostModel, shapes: pd.DataFrame, file: str = "<frame>") -> pd.DataFrame:
    """Predict every row of a shapes frame (see module docstring)."""
    if "op" not in shapes.columns:
        raise InputError(f"missing column 'op'; found {list(shapes.columns)}", file=file,
                         field="op")
    times, provs = [], []
    for i, row in enumerate(shapes.to_dict("records")):
        line = i + 2
        op = row["op"]
        try:
            if op == "iteration":
                keys = ("prefill_seqs", "prefill_tokens", "prefill_context", "decode_seqs",
                        "decode_context")
                batch = {k: int(row[k]) for k in keys if _present(row, k)}
                t, prov = predict_iteration(
                    cost, row["model"], row["device"], tp=row.get("tp", 1) if _present(row, "tp") else 1,
                    pp=row.get("pp", 1) if _present(row, "pp") else 1,
                    link=row["link"] if _present(row, "link") else None, **batch)
            elif op in OP_FIELDS:
                shape = {}
                for k in OP_FIELDS[op]:
                    if _present(row, k):
                        shape[k] = float(row[k]) if k == "bytes" else int(row[k])
                    elif k not in OPTIONAL:
                        raise InputError(f"operator {op!r} needs column {k!r}", file=file,
                                         line=line, field=k)
                dtype = row["dtype"] if _present(row, "dtype") else "bf16"
                p = cost.predict_op(op, load_device(row["device"]), dtype=dtype, **shape)
                t, prov = p["time_s"], p["provenance"]
            else:
                raise InputError(f"unknown op {op!r}; expected iteration or one of "
                                 f"{sorted(OP_FIELDS)}", file=file, line=line, field="op")
        except InputError:
            raise
        except (KeyError, ValueError, TypeError) as err:
            raise InputError(str(err), file=file, line=line) from None
        times.append(t)
        provs.append(prov)
    out = shapes.copy()
    out["pred_time_s"] = times
    out["provenance"] = provs
    return out
