"""``simcluster calibrate-engine``: a per-iteration log -> ``hwspecs/engines/<name>.toml``.

The engine's kernel accounting and execution mode decide its device time (for transformers
logs they are read from the log's settings: ``hf-cb`` kernels, eager or CUDA graphs with their
padding); the fit then finds the host terms. The spec records the profiled envelope."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from simcluster.cost import Layout
from simcluster.cost.accounting import ExecutionMode
from simcluster.engines import EngineSpec, engine_toml
from simcluster.engines.envelope import Envelope
from simcluster.engines.fit import PHYSICAL, FitResult, fit_logs
from simcluster.engines.model import (BASE_TERMS, HOST_TERMS, KINDS, TERMS, EngineCostModel,
                                      EngineTerms)
from simcluster.engines.profile import read_iterations
from simcluster.engines.spec import padding_of
from simcluster.hardware import load_device, load_link
from simcluster.models import load_model

#: What each term stood for in the reference engine (comments written into the TOML).
TERM_NOTES = {
    "iteration": "host: scheduling, input building, eager launches, sync, update",
    "sequence": "per request in the batch",
    "token": "per new token",
    "kv_token": "per KV token attended: gather into a packed tensor, copy, read",
    "attn_pair": "per (new token, KV token) pair: attention over the packed batch, dense mask",
    "sample": "per sampled token",
}


def settings_of(meta: dict) -> dict:
    """The ``settings`` line of a log or replay written by ``simcluster.harness.
    engine_profile`` (``key=value, ...``), as a dict of strings (empty when absent)."""
    text = meta.get("settings", "")
    return dict(kv.strip().split("=", 1) for kv in text.split(",") if "=" in kv)


def hf_settings(meta: dict) -> tuple[str, dict, dict] | None:
    """Batching policy, its parameters and scheduler settings from the ``settings`` line of
    a log written by ``simcluster.harness.engine_profile`` (transformers CB)."""
    if meta.get("engine") != "hf-transformers-cb" or "settings" not in meta:
        return None
    s = settings_of(meta)
    params = {"safety_margin": float(s.get("safety_margin", 0.15)),
              "num_blocks": int(s["num_blocks"]),
              "max_requests_per_batch": int(s["max_requests_per_batch"])}
    sched = {"block_size": int(s["block_size"]),
             "max_batched_tokens": int(s["max_batch_tokens"]),
             "max_num_seqs": int(s["max_requests_per_batch"]), "chunked_prefill": True}
    return "hf_cb", params, sched


#: transformers' defaults for the CUDA-graph padding intervals (generation/continuous_batching/
#: initialization.py FALLBACK_DEFAULTS): 64 query tokens, 64 blocks of 256 = 16384 KV tokens.
HF_DEFAULT_PADDING = {"q_tokens": 64, "kv_tokens": 16384}


def hf_execution(meta: dict) -> tuple[str, ExecutionMode, dict] | None:
    """Kernel accounting, execution mode and padding of a transformers CB log: ``hf-cb``
    kernels; CUDA graphs on both paths with the padding intervals, or eager."""
    if meta.get("engine") != "hf-transformers-cb":
        return None
    s = settings_of(meta)
    if s.get("use_cuda_graph", "False") == "True":
        pad = {"q_tokens": int(s.get("q_padding_interval_size") or 0)
               or HF_DEFAULT_PADDING["q_tokens"],
               "kv_tokens": int(s.get("kv_padding_interval_size") or 0)
               or HF_DEFAULT_PADDING["kv_tokens"]}
        return "hf-cb", ExecutionMode("graphs", "graphs"), pad
    return "hf-cb", ExecutionMode("eager", "eager"), {}


def calibrate(csvs, device: str, model: str, name: str, *, calibration: str = "measured",
              batching: str | None = None, batching_params: dict | None = None,
              scheduler: dict | None = None, description: str = "",
              scale_free: bool = False, decode_only=(), kernels: str | None = None,
              execution=None, padding: dict | None = None, tp: int = 1,
              link: str | None = None, transfer: dict | None = None
              ) -> tuple[EngineSpec, FitResult]:
    """Fit the engine model of the per-iteration log(s) ``csvs`` (one path or several, fitted
    together) on ``device`` serving ``model`` (``tp`` ranks over ``link``). Metadata and
    engine settings come from the first log; for transformers logs the kernel accounting,
    execution mode and padding too (else the arguments, default fused kernels in CUDA
    graphs). The logs in ``decode_only`` (paths) contribute their decode iterations only.
    Iterations that captured a CUDA graph are left out (``graph_capture`` column)."""
    paths = [csvs] if isinstance(csvs, (str, Path)) else list(csvs)
    only = [Path(p) for p in ([decode_only] if isinstance(decode_only, (str, Path))
                              else decode_only)]
    paths += [p for p in only if Path(p) not in [Path(q) for q in paths]]
    logs = [read_iterations(p) for p in paths]
    first = logs[0].meta
    found = hf_settings(first)
    pol, params, sched = found if found else ("vllm", {}, {})
    if batching is not None and batching != pol:
        params = {}         # (the log's parameters are its own policy's: hf_cb's, not vllm's)
    params = dict(batching_params if batching_params is not None else params)
    sched = dict(scheduler if scheduler is not None else sched)
    hf = hf_execution(first) or ("fused", ExecutionMode(), {})
    kernels = kernels or hf[0]
    execution = ExecutionMode.of(execution) if execution is not None else hf[1]
    padding = dict(padding if padding is not None else hf[2])
    dev, mdl = load_device(device), load_model(model)
    layout = Layout.uniform(dev, tp=tp, link=load_link(link) if link else None)
    pad = padding_of(padding, sched, params)
    timer = EngineCostModel(EngineTerms(), calibration, kernels=kernels, execution=execution,
                            pad=pad).timer(mdl, layout)
    capture = np.concatenate([log.frame["graph_capture"].to_numpy(float) > 0
                              if "graph_capture" in log.frame else np.zeros(len(log.frame), bool)
                              for log in logs])
    res, use = fit_logs(logs, timer, scale_free=scale_free, pad=pad, exclude=capture,
                        decode_only=[i for i, p in enumerate(paths) if Path(p) in only])
    bounds = np.cumsum([0] + [len(log.frame) for log in logs])
    envelope = Envelope.from_logs(logs, [use[bounds[i]:bounds[i + 1]]
                                         for i in range(len(logs))])
    meta = {("served_model" if k == "model" else k): v for k, v in first.items()
            if k not in ("settings", "kind", "device", "calibration", "sweep", "t0_unix")}
    meta["profiles"] = [Path(p).name for p in paths if Path(p) not in only]
    if only:
        meta["profiles_decode_only"] = [Path(p).name for p in only]
    if "settings" in first:
        meta["settings"] = first["settings"]
    if tp > 1:
        meta["tp"], meta["link"] = tp, link or ""
    spec = EngineSpec(name=name, terms=res.terms, device=dev.name, model=model,
                      calibration=calibration, description=description,
                      batching=batching or pol, batching_params=params, scheduler=sched,
                      meta=meta, fit=_fit_table(res, int(capture.sum())), kernels=kernels,
                      execution=execution, padding=padding, envelope=envelope,
                      transfer=dict(transfer or {}))
    return spec, res


def _fit_table(res: FitResult, captures: int) -> dict:
    physical = [t for t in res.kept if t.split("_", 1)[-1] in PHYSICAL]
    return {"iterations": res.n_fit, "prefill_iterations_not_used": res.n_skipped,
            "dropped_after_idle": res.n_transient - captures,
            "dropped_graph_capture": captures,
            "dropped_fast_host_state": res.n_dropped - res.n_transient,
            "loss": "least squares on relative error (after a soft_l1 screen)",
            "shared_kinds": res.shared,
            "terms_kept": list(res.kept),
            "terms_dropped": [t for t in TERMS if t not in res.kept],
            "physical_terms_kept": physical,
            "physical_terms_rejected_by_data": list(res.rejected),
            "host_terms": [t for t in res.kept if t.split("_", 1)[-1] in HOST_TERMS],
            "device_scaled_terms": physical,
            "rel_err_median": round(res.rel_err_median, 4),
            "rel_err_p90": round(res.rel_err_p90, 4), "bias": round(res.bias, 4),
            "device_share": round(res.device_share, 4),
            "cost_increase_if_removed": {t: round(v, 4) for t, v in res.support.items()},
            "share_of_time": {t: round(v, 4) for t, v in res.share.items()}}


def write_spec(spec: EngineSpec, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = [f"Engine model {spec.name}: written by `simcluster calibrate-engine`.",
              "iteration time = device_scale * (kernel-calibrated device time) + sum of",
              "coefficient x count over [terms]; see simcluster/engines/model.py and",
              "hwspecs/engines/README.md."]
    path.write_text(engine_toml(spec, {"header": header, "terms": TERM_NOTES}))
    return path


def format_fit(res: FitResult) -> str:
    lines = [f"fitted on {res.n_fit} iterations ({res.n_skipped} prefill iterations of "
             f"decode-only logs not used; {res.n_dropped} dropped: {res.n_transient} "
             f"right after idling, {res.n_dropped - res.n_transient} in the fast host state); "
             f"relative error median {100 * res.rel_err_median:.1f}%, "
             f"p90 {100 * res.rel_err_p90:.1f}%, bias {100 * res.bias:+.1f}%; "
             f"device time is {100 * res.device_share:.0f}% of the predicted time"
             + ("; one coefficient per term for both kinds (too few of one kind)"
                if res.shared else ""),
             f"{'term':<18} {'coefficient':>12}  {'share':>6}  {'cost if removed':>15}"]
    t = res.terms
    for kind in KINDS:
        for base in BASE_TERMS:
            name = f"{kind}_{base}"
            v = getattr(t, name)
            if name in res.kept:
                note = ("  kept: attention over context (physics), though the data barely "
                        "needs it" if base in PHYSICAL and res.support[name] < 0.01 else "")
                lines.append(f"{name:<18} {v:>12.4g}  {100 * res.share[name]:>5.1f}%  "
                             f"{100 * res.support[name]:>+14.1f}%{note}")
            elif name in res.rejected:
                lines.append(f"{name:<18} {'rejected':>12}  (the data puts it at zero)")
            else:
                lines.append(f"{name:<18} {'dropped':>12}  (the data does not support it)")
    lines.append(f"{'device time':<18} {'x' + format(t.device_scale, '.3g'):>12}")
    return "\n".join(lines)
