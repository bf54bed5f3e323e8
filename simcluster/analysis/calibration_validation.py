"""Validation: predictions against measurements, with error tables per operator class.

Three validations make ``docs/validation.md`` (``benchmarks/validation_report.py``):

1. *held-out shapes*: fit each calibrated device on a seeded 75% of its table rows, predict
   the other 25% through the public ``CostModel.predict_op``;
2. *cross-device*: fit on H100-SXM only, predict the H200's measurements (the H200 borrows the
   H100's curves, scaled by its own peaks);
3. *whole iterations* against published measurements (``../shared/calibration``):
   SplitwiseSim's profiled Llama-2-70B prompt and token times on DGX-A100 / DGX-H100 at TP
   2/4/8, and DistServe's fitted A100 latency model for OPT-13B/66B.

``validate_table(cost, table_path, device)`` is what ``simcluster validate`` runs on a user's
own measured CSV (a kernel table in the calibration suite's format, or an iteration CSV with
``simcluster predict``'s columns plus ``measured_time_s``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from simcluster.calibration.fitted import MeasuredCalibration, fit_curves, table_rows
from simcluster.calibration.tables import check_table, read_table
from simcluster.cost import Batch, CostModel, Layout
from simcluster.errors import InputError
from simcluster.hardware import DeviceSpec, load_device, load_link
from simcluster.models import load_model

OPS = ("gemm", "attn_prefill", "attn_decode", "elementwise")


def _shape(op: str, row: dict) -> dict:
    if op == "gemm":
        return {"m": int(row["m"]), "n": int(row["n"]), "k": int(row["k"])}
    if op == "attn_prefill":
        return {"tokens": int(row["seq_len"]), "batch": int(row["batch"]),
                "num_heads": int(row["num_heads"]), "num_kv_heads": int(row["num_kv_heads"]),
                "head_dim": int(row["head_dim"])}
    if op == "attn_decode":
        return {"batch": int(row["batch"]), "kv_len": int(row["kv_len"]),
                "num_heads": int(row["num_heads"]), "num_kv_heads": int(row["num_kv_heads"]),
                "head_dim": int(row["head_dim"])}
    return {"bytes": float(row["bytes"]), "kind": row.get("op"), "hidden": row.get("hidden")}


def predict_rows(cost: CostModel, device: DeviceSpec, op: str, df: pd.DataFrame,
                 dtype: str = "bf16") -> pd.DataFrame:
    """Per-row prediction of a kernel table's rows: measured, predicted, signed error."""
    out = []
    for row in df.to_dict("records"):
        shape = _shape(op, row)
        p = cost.predict_op(op, device, dtype=row.get("dtype", dtype), **shape)
        out.append({"op": op, "device": device.name, **shape, "measured_s": row["time_s"],
                    "pred_s": p["time_s"], "provenance": p["provenance"]})
    res = pd.DataFrame(out)
    if len(res):
        res["error"] = res.pred_s / res.measured_s - 1.0
    return res


def error_table(pred: pd.DataFrame, by: str = "op") -> pd.DataFrame:
    """n, median, p90 and max absolute percentage error per group."""
    ape = pred.error.abs() * 100
    g = ape.groupby(pred[by])
    return pd.DataFrame({"n": g.size(), "median_ape_pct": g.median(),
                         "p90_ape_pct": g.quantile(0.9), "max_ape_pct": g.max(),
                         "mean_signed_pct": (pred.error * 100).groupby(pred[by]).mean()})


def _split(df: pd.DataFrame, frac: float, rng: np.random.Generator):
    test = rng.random(len(df)) < frac
    return df[~test], df[test]


def holdout(folder, device: DeviceSpec, frac: float = 0.25, seed: int = 0) -> pd.DataFrame:
    """Fit on a seeded ``1 - frac`` of each table's rows; predict the rest."""
    from simcluster.calibration.tables import load_tables
    tables = load_tables(folder)
    rng = np.random.default_rng(seed)
    train, test = {}, {}
    for op, name in (("gemm", "gemm"), ("attn_prefill", "attn_prefill"),
                     ("attn_decode", "attn_decode"), ("elementwise", "elementwise")):
        rows = table_rows(tables, op, "bf16")
        if rows is None:
            continue
        tr, te = _split(rows, frac, rng)
        train[name] = (tables[name][0], tr)
        test[op] = te
    cal = MeasuredCalibration({device.name: fit_curves(train, device)}, {device.name: device},
                              note=f"fit on {1 - frac:.0%} of rows")
    cost = CostModel(cal)
    return pd.concat([predict_rows(cost, device, op, df) for op, df in test.items()],
                     ignore_index=True)


def cross_device(fit_folder, fit_device: DeviceSpec, test_folder, test_device: DeviceSpec):
    """Fit on one device's tables, predict another's measurements."""
    from simcluster.calibration.tables import load_tables
    fit_tables = {k: v for k, v in load_tables(fit_folder).items() if k in OPS}
    cal = MeasuredCalibration({fit_device.name: fit_curves(fit_tables, fit_device)},
                              {fit_device.name: fit_device}, note=f"fit on {fit_device.name}")
    cost = CostModel(cal)
    tables = load_tables(test_folder)
    fitted_kinds = set(fit_tables["elementwise"][1].op) if "elementwise" in fit_tables else set()
    parts = []
    for op in OPS:
        rows = table_rows(tables, op, "bf16")
        if rows is None:
            continue
        if op == "elementwise":      # only the kinds the fitted device measured too
            rows = rows[rows.op.isin(fitted_kinds)]
        parts.append(predict_rows(cost, test_device, op, rows))
    return pd.concat(parts, ignore_index=True)


# -- whole iterations against published measurements ---------------------------------------
_SPLITWISE_HW = {"a100-80gb": ("A100-80GB", "NVLink3"), "h100-80gb": ("H100-SXM", "NVLink4")}


def splitwise(cost: CostModel, path) -> pd.DataFrame:
    """SplitwiseSim's profiled Llama-2-70B prompt (prefill) and token (decode) times.

    ``prompt_time`` is one prefill iteration of ``batch_size`` prompts of ``prompt_size``;
    ``token_time`` is the mean decode iteration over ``token_size`` generated tokens, so it is
    predicted at the mean context ``prompt_size + token_size / 2``. Repeated profiles of one
    configuration are reduced to their median.
    """
    df = pd.read_csv(path)
    df = df[(df.model == "llama2-70b") & df.hardware.isin(list(_SPLITWISE_HW))]
    keys = ["hardware", "tensor_parallel", "prompt_size", "batch_size", "token_size"]
    df = df.groupby(keys, as_index=False)[["prompt_time", "token_time"]].median()
    model = load_model("llama-2-70b")
    rows = []
    for r in df.to_dict("records"):
        dev_name, link = _SPLITWISE_HW[r["hardware"]]
        tp = int(r["tensor_parallel"])
        layout = Layout.uniform(load_device(dev_name), tp=tp, link=load_link(link))
        b, p, t = int(r["batch_size"]), int(r["prompt_size"]), int(r["token_size"])
        pre = cost.iteration(model, layout, Batch(prefill_tokens=(p,) * b))
        dec = cost.iteration(model, layout, Batch(decode_context=(p + t // 2,) * b))
        common = {"source": "splitwise", "device": dev_name, "tp": tp, "batch": b,
                  "prompt": p, "tokens": t, "provenance": pre.provenance}
        rows.append({**common, "op": "prefill_iteration", "measured_s": r["prompt_time"] / 1e3,
                     "pred_s": pre.time_s})
        rows.append({**common, "op": "decode_iteration", "measured_s": r["token_time"] / 1e3,
                     "pred_s": dec.time_s})
    out = pd.DataFrame(rows)
    out["error"] = out.pred_s / out.measured_s - 1.0
    return _flag_impossible(out, cost)


def _flag_impossible(out: pd.DataFrame, cost: CostModel) -> pd.DataFrame:
    """Mark rows measured faster than the datasheet roofline allows (``below_roofline``):
    they cannot be one iteration of the stated batch (SplitwiseSim's batch-64 prompts at
    TP 2 are 9-13x under it) and are reported apart, not averaged in."""
    from simcluster.calibration import NEUTRAL
    roof = CostModel(NEUTRAL)
    model = load_model("llama-2-70b")
    lows = []
    for r in out.to_dict("records"):
        dev, link = _SPLITWISE_HW["a100-80gb" if r["device"].startswith("A100") else "h100-80gb"]
        layout = Layout.uniform(load_device(dev), tp=r["tp"], link=load_link(link))
        batch = (Batch(prefill_tokens=(r["prompt"],) * r["batch"])
                 if r["op"] == "prefill_iteration"
                 else Batch(decode_context=(r["prompt"] + r["tokens"] // 2,) * r["batch"]))
        lows.append(r["measured_s"] < roof.iteration(model, layout, batch).time_s)
    out["below_roofline"] = lows
    return out


def distserve(cost: CostModel, path, engine: str) -> pd.DataFrame:
    """DistServe's fitted A100 latency model (ms): prefill a + b*sum L + c*sum L^2; decode
    a + b*sum context + c*batch (large-batch coefficients at or above the threshold),
    evaluated on a grid of batches and compared with the cost model."""
    coeffs = json.loads(Path(path).read_text())
    dev = load_device("A100-80GB")
    rows = []
    for hf_name, by_tp in coeffs.items():
        model = load_model(hf_name.split("/")[-1])
        for tp_s, c in by_tp.items():
            tp = int(tp_s)
            layout = Layout.uniform(dev, tp=tp, link=load_link("NVLink3"))
            a, b_, c_ = c["prefill"]
            for batch in (1, 2, 4, 8):
                for L in (128, 256, 512, 1024, 2048):
                    if batch * L > 8192:
                        continue
                    meas = (a + b_ * batch * L + c_ * batch * L * L) / 1e3
                    pred = cost.iteration(model, layout, Batch(prefill_tokens=(L,) * batch))
                    rows.append({"source": f"distserve-{engine}", "device": dev.name,
                                 "model": model.name, "tp": tp, "op": "prefill_iteration",
                                 "batch": batch, "context": L, "measured_s": meas,
                                 "pred_s": pred.time_s, "provenance": pred.provenance})
            thr = c["decoding_large_small_bs_threshold"]
            for batch in (1, 8, 32, 64, 128, 256):
                da, db, dc = c["decoding_largebs" if batch >= thr else "decoding_smallbs"]
                for ctx in (128, 512, 1024, 2048):
                    meas = (da + db * batch * ctx + dc * batch) / 1e3
                    pred = cost.iteration(model, layout, Batch(decode_context=(ctx,) * batch))
                    rows.append({"source": f"distserve-{engine}", "device": dev.name,
                                 "model": model.name, "tp": tp, "op": "decode_iteration",
                                 "batch": batch, "context": ctx, "measured_s": meas,
                                 "pred_s": pred.time_s, "provenance": pred.provenance})
    out = pd.DataFrame(rows)
    out["error"] = out.pred_s / out.measured_s - 1.0
    return out


# -- a user's own CSV ------------------------------------------------------------------------
def validate_table(cost: CostModel, path, device: str | None) -> pd.DataFrame:
    """Predict every row of a measured CSV (see module docstring) on ``device``."""
    meta, df = read_table(path, time_column=None)
    table = meta.get("table") or Path(path).stem
    if "op" in df.columns:                            # iteration / operator rows
        meta, df = read_table(path, time_column="measured_time_s")
        from simcluster.cost.predict import predict_frame
        if device is not None and "device" in df.columns:
            raise InputError("does nothing: the CSV's device column names each row's device",
                             file=str(path), field="--device")
        if device is not None:
            df = df.assign(device=device)
        out = predict_frame(cost, df.drop(columns=["time_s"], errors="ignore"), file=str(path),
                            lines=df.attrs["lines"])
        out = out.rename(columns={"measured_time_s": "measured_s", "pred_time_s": "pred_s"})
        out["error"] = out.pred_s / out.measured_s - 1.0
        return out
    meta, df = read_table(path, time_column="time_s")
    if device is None:
        raise InputError("give --device for a kernel table", file=str(path))
    op = table.replace("cpu_", "")
    if op not in OPS:
        raise InputError(f"unknown table {table!r}; expected one of {OPS} (or cpu_ ones), "
                         "or a CSV with an 'op' column", file=str(path))
    check_table(table, df, path)
    rows = table_rows({table: (meta, df)}, op, "bf16") if "dtype" not in df.columns else df
    return predict_rows(cost, load_device(device), op, rows)


# -- a separate measurement run: held-out operators in every execution mode ------------------
#: Kernels an elementwise op of the held-out table launches (its launch count in eager modes).
ELEMENTWISE_LAUNCHES = {"rmsnorm": 1, "rmsnorm_hf": 8, "rotary_hf": 10, "silu_mul": 2,
                        "residual_add": 1}
MODES = {"graph": "graph", "eager": "eager", "isolated": "isolated"}


def _heldout_shape(row: dict) -> tuple[str, dict]:
    op = row["op"]
    if op == "gemm":
        return op, {"m": int(row["m"]), "n": int(row["n"]), "k": int(row["k"]),
                    "layout": row["layout"]}
    if op == "attn_prefill":
        return op, {"tokens": int(row["seq_len"]), "batch": int(row["batch"]),
                    "num_heads": int(row["num_heads"]),
                    "num_kv_heads": int(row["num_kv_heads"]), "head_dim": int(row["head_dim"])}
    if op == "attn_decode":
        return op, {"batch": int(row["batch"]), "kv_len": int(row["kv_len"]),
                    "num_heads": int(row["num_heads"]),
                    "num_kv_heads": int(row["num_kv_heads"]), "head_dim": int(row["head_dim"])}
    kind = row["kind"]
    return op, {"bytes": float(row["bytes"]), "kind": kind, "hidden": int(row["hidden"]),
                "kernels": 1, "launches": ELEMENTWISE_LAUNCHES.get(kind, 1)}


def heldout(cost: CostModel, path, device: DeviceSpec) -> pd.DataFrame:
    """Predict every row of a held-out ``validation_ops`` table (a separate measurement run:
    shapes off the fitting grids, each timed ``graph``, ``eager`` and ``isolated``) in its
    row's mode. Attention keeps the faster backend per shape and mode, as the calibration
    does. Rows: op, kind/layout, mode, measured_s, pred_s, error."""
    meta, df = read_table(path)
    keys = ["op", "kind", "m", "n", "k", "layout", "batch", "seq_len", "kv_len", "num_heads",
            "num_kv_heads", "head_dim", "tokens", "hidden", "mode"]
    keys = [k for k in keys if k in df.columns]
    df = df.loc[df.groupby(keys, dropna=False).time_s.idxmin()]
    out = []
    for row in df.to_dict("records"):
        op, shape = _heldout_shape(row)
        p = cost.predict_op(op, device, mode=MODES[row["mode"]], **shape)
        out.append({"op": op, "kind": row.get("kind") if op == "elementwise" else
                    row.get("layout", ""), "mode": row["mode"], "measured_s": row["time_s"],
                    "pred_s": p["time_s"], "provenance": p["provenance"]})
    res = pd.DataFrame(out)
    res["error"] = res.pred_s / res.measured_s - 1.0
    return res


# -- whole-model forward passes ------------------------------------------------------------
#: The forward harness's model shapes -> simulator presets.
FORWARD_MODELS = {"llama-2-7b": "llama-2-7b", "llama-3-8b": "llama-3.1-8b"}


def forward_passes(cost: CostModel, folder, device: DeviceSpec,
                   exclude: set | None = None) -> pd.DataFrame:
    """Predict the whole-model forward passes measured by ``engine_profile forward``
    (``forward-<model>.csv`` under ``folder``) with ``cost`` (its kernel accounting and
    execution mode). ``exclude``: (model, phase, batch, tokens, context) rows used to
    calibrate something, marked ``calibration`` (not errors of held-out data)."""
    rows = []
    for path in sorted(Path(folder).glob("forward-*.csv")):
        if "kernels" in path.name:
            continue
        meta, df = read_table(path, time_column="wall_s")
        for r in df.to_dict("records"):
            model = load_model(FORWARD_MODELS.get(r["model"], r["model"]))
            timer = cost.timer(model, Layout.uniform(device))
            b, t, L = int(r["batch"]), int(r["tokens"]), int(r["context"])
            if r["phase"] == "prefill":
                batch = Batch(prefill_tokens=(t,) * b, prefill_context=(L,) * b)
            else:
                batch = Batch(decode_context=(L + 1,) * b)
            pred = timer.time(np.array(batch.prefill_tokens), np.array(batch.prefill_context),
                              len(batch.decode_context), sum(batch.decode_context),
                              batch.samples)
            key = (r["model"], r["phase"], b, t, L)
            rows.append({"model": r["model"], "phase": r["phase"], "batch": b, "tokens": t,
                         "context": L, "measured_s": r["wall_s"], "pred_s": pred,
                         "calibration": key in (exclude or set())})
    out = pd.DataFrame(rows)
    out["error"] = out.pred_s / out.measured_s - 1.0
    return out
