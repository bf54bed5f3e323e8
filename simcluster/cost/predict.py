"""Predictions from shapes: one operator or one iteration, singly or a CSV of them.

A shapes CSV has an ``op`` column. Operator rows (``gemm``, ``attn_prefill``, ``attn_decode``,
``elementwise``) carry ``device`` and the operator's shape columns (see
:meth:`CostModel.predict_op`). Iteration rows (``op = iteration``) carry ``model``, ``device``,
optional ``tp``, ``pp``, ``link``, and the batch: ``prefill_seqs`` sequences of
``prefill_tokens`` new tokens after ``prefill_context`` cached ones, plus ``decode_seqs``
sequences decoding over ``decode_context`` tokens each. Output rows add ``pred_time_s``,
``provenance``, and for iterations ``fits_memory`` and ``memory`` (:func:`iteration_memory`:
whether the weights, activations and the batch's KV cache fit the devices; empty for
operators).
"""

from __future__ import annotations

import math

import pandas as pd

from simcluster.cost import Batch, CostModel, Layout
from simcluster.cost.parallel import check_parallel
from simcluster.errors import InputError
from simcluster.hardware import default_tp_link, load_device, load_link
from simcluster.models import load_model

OP_FIELDS = {"gemm": ("m", "n", "k"),
             "attn_prefill": ("tokens", "context", "num_heads", "num_kv_heads", "head_dim",
                              "batch"),
             "attn_decode": ("batch", "kv_len", "num_heads", "num_kv_heads", "head_dim"),
             "elementwise": ("bytes", "kernels", "hidden")}
OPTIONAL = {"context", "batch", "kernels", "hidden"}


def iteration_batch(prefill_seqs=0, prefill_tokens=0, prefill_context=0, decode_seqs=0,
                    decode_context=0) -> Batch:
    """The batch of ``prefill_seqs`` prompts of ``prefill_tokens`` after ``prefill_context``
    cached tokens and ``decode_seqs`` decodes over ``decode_context`` tokens; InputError for
    an empty or negative one."""
    counts = dict(prefill_seqs=prefill_seqs, prefill_tokens=prefill_tokens,
                  prefill_context=prefill_context, decode_seqs=decode_seqs,
                  decode_context=decode_context)
    for name, v in counts.items():
        if isinstance(v, bool) or int(v) != v or v < 0:
            raise InputError(f"expected a whole number >= 0, got {v!r}", field=name)
    if prefill_seqs and not prefill_tokens:
        raise InputError("prefill sequences need prefill_tokens >= 1", field="prefill_tokens")
    for size, seqs in (("prefill_tokens", "prefill_seqs"), ("prefill_context", "prefill_seqs"),
                       ("decode_context", "decode_seqs")):
        if counts[size] and not counts[seqs]:
            raise InputError(f"{size} is {counts[size]} but {seqs} is 0: give how many "
                             f"sequences of that size the batch holds ({seqs} >= 1)", field=seqs)
    if not prefill_seqs and not decode_seqs:
        raise InputError("an empty batch has no iteration time: give prefill_seqs with "
                         "prefill_tokens, or decode_seqs (with decode_context)",
                         field="prefill_seqs / decode_seqs")
    return Batch(prefill_tokens=(int(prefill_tokens),) * int(prefill_seqs),
                 prefill_context=(int(prefill_context),) * int(prefill_seqs),
                 decode_context=(int(decode_context),) * int(decode_seqs))


def predict_iteration(cost: CostModel, model: str, device: str, tp=1, pp=1, link=None,
                      **batch) -> tuple[float, str]:
    """Time and provenance of one iteration of ``model`` on ``tp`` x ``pp`` devices ``device``
    (the link defaults to the device's own interconnect where a node template states it)."""
    mdl, layout = _layout(model, device, tp, pp, link)
    res = cost.iteration(mdl, layout, iteration_batch(**batch))
    return res.time_s, res.provenance


def _layout(model: str, device: str, tp, pp, link):
    dev, mdl = load_device(device), load_model(model)
    for name, v in (("tp", tp), ("pp", pp)):
        if isinstance(v, bool) or int(v) != v or v < 1:
            raise InputError(f"expected a whole number >= 1, got {v!r}", field=name)
    link = link or ((default_tp_link(dev) or _no_link(dev)) if tp * pp > 1 else None)
    lk = load_link(link) if link else None
    layout = Layout.uniform(dev, tp=int(tp), pp=int(pp), link=lk)
    check_parallel(mdl, layout)
    return mdl, layout


#: The share of device memory an iteration may use: the serving engines' default
#: (``InstanceConfig.memory_utilization``, vLLM's ``gpu_memory_utilization``).
MEMORY_UTILIZATION = 0.9


def iteration_memory(model: str, device: str, tp=1, pp=1, link=None,
                     **batch) -> tuple[bool, str]:
    """Whether one iteration of ``model`` on ``tp`` x ``pp`` devices ``device`` fits their
    memory, and a line saying so: the weights, an activation reserve for the batch's new tokens
    and sequences, and the KV cache of every sequence of the batch (its context and new
    tokens) within :data:`MEMORY_UTILIZATION` of each device (:func:`~.memory.memory_plan`).
    A prediction stands either way; one that does not fit is of an iteration no engine could
    run on that layout."""
    from simcluster.cost.memory import memory_plan
    b = iteration_batch(**batch)
    mdl, layout = _layout(model, device, tp, pp, link)
    seqs = [t + c for t, c in zip(b.prefill_tokens, b.prefill_context)] + list(b.decode_context)
    plan = memory_plan(mdl, layout, memory_utilization=MEMORY_UTILIZATION,
                       max_batched_tokens=max(1, sum(b.prefill_tokens) + len(b.decode_context)),
                       max_num_seqs=len(seqs))
    where = (f"{int(tp) * int(pp)} x {layout.devices[0].name} at {MEMORY_UTILIZATION:g} "
             "of memory")
    if plan.oom:
        return False, f"does not fit {where}: {plan.oom[0]}"
    need, longest = sum(seqs), max(seqs)
    if need > plan.kv_capacity_tokens:
        return False, (f"does not fit {where}: the batch's {need:,} KV tokens > "
                       f"{plan.kv_capacity_tokens:,} that fit beside the weights")
    if longest > plan.seq_capacity_tokens:
        return False, (f"does not fit {where}: one sequence's {longest:,} KV tokens > "
                       f"{plan.seq_capacity_tokens:,} that one data-parallel group holds")
    return True, (f"fits {where}: {need:,} KV tokens of {plan.kv_capacity_tokens:,} that fit "
                  f"beside the weights")


def _no_link(dev) -> str:
    raise InputError(f"tp/pp > 1 over {dev.name} needs a link, and no node template states "
                     "its interconnect: name one (simcluster list links)", field="link")


def _present(row, key):
    v = row.get(key)
    return v is not None and not (isinstance(v, float) and math.isnan(v))


_BATCH = ("prefill_seqs", "prefill_tokens", "prefill_context", "decode_seqs",
          "decode_context")


def _check_cells(shapes: pd.DataFrame, rows) -> None:
    """Every shape cell a row of each op gives: a whole number (>= 1; ``context`` and an
    iteration's batch counts >= 0; ``bytes`` any number >= 1), checked as a trace's cells are
    (:func:`simcluster.workload._columns.numbers`): an InputError at its line, never a
    truncation. Which cells an op needs is the row loop's to say."""
    import numpy as np

    from simcluster.workload._columns import numbers
    least = {"iteration": {**dict.fromkeys(_BATCH, 0), "tp": 1, "pp": 1}}
    least.update({op: {k: 0 if k == "context" else 1 for k in fields}
                  for op, fields in OP_FIELDS.items()})
    ops = shapes["op"].to_numpy()
    for op, columns in least.items():
        for k, low in columns.items():
            if k in shapes.columns:
                given = (ops == op) & shapes[k].notna().to_numpy()
                if given.any():
                    whole = k != "bytes"
                    numbers(shapes[k][given], rows.take(np.flatnonzero(given)), k,
                            integer=whole, minimum=low,
                            expected=f"a whole number >= {low}" if whole else
                            "a number of bytes >= 1")


def _names(row, op: str, keys) -> None:
    for k in keys:
        if not _present(row, k):
            raise InputError(f"{op} rows need a {k!r}", field=k)


def predict_frame(cost: CostModel, shapes: pd.DataFrame, file: str = "<frame>",
                  lines=None) -> pd.DataFrame:
    """Predict every row of a shapes frame (see module docstring). ``lines``: the file's line
    of each row, for messages (default: ``shapes.attrs['lines']``, else a header and one line
    a row)."""
    if "op" not in shapes.columns:
        raise InputError(f"missing column 'op'; found {list(shapes.columns)}", file=file,
                         field="op")
    import numpy as np

    from simcluster.workload._columns import Rows
    if lines is None:
        lines = shapes.attrs.get("lines")
    lines = np.asarray(range(2, len(shapes) + 2) if lines is None else lines)
    _check_cells(shapes, Rows(file, lines))
    times, provs, fits, notes = [], [], [], []
    for row, line in zip(shapes.to_dict("records"), lines.tolist()):
        op = row["op"]
        try:
            if op == "iteration":
                _names(row, op, ("model", "device"))
                batch = {k: int(row[k]) for k in _BATCH if _present(row, k)}
                where = dict(tp=int(row["tp"]) if _present(row, "tp") else 1,
                             pp=int(row["pp"]) if _present(row, "pp") else 1,
                             link=row["link"] if _present(row, "link") else None)
                t, prov = predict_iteration(cost, row["model"], row["device"], **where,
                                            **batch)
                fit, note = iteration_memory(row["model"], row["device"], **where, **batch)
            elif op in OP_FIELDS:
                shape = {}
                _names(row, op, ("device",))
                for k in OP_FIELDS[op]:
                    if _present(row, k):
                        shape[k] = float(row[k]) if k == "bytes" else int(row[k])
                    elif k not in OPTIONAL:
                        raise InputError(f"operator {op!r} needs column {k!r}", file=file,
                                         line=line, field=k)
                dtype = row["dtype"] if _present(row, "dtype") else "bf16"
                p = cost.predict_op(op, load_device(row["device"]), dtype=dtype, **shape)
                t, prov = p["time_s"], p["provenance"]
                fit, note = None, ""
            else:
                raise InputError(f"unknown op {op!r}; expected iteration or one of "
                                 f"{sorted(OP_FIELDS)}", file=file, line=line, field="op")
        except InputError as err:
            if err.file is not None:
                raise
            raise InputError(err.reason, file=file, line=line, field=err.field) from None
        except (KeyError, ValueError, TypeError) as err:
            raise InputError(str(err), file=file, line=line) from None
        times.append(t)
        provs.append(prov)
        fits.append(fit)
        notes.append(note)
    out = shapes.copy()
    out["pred_time_s"] = times
    out["provenance"] = provs
    out["fits_memory"] = pd.array(fits, dtype="boolean")
    out["memory"] = notes
    return out
