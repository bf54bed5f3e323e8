"""Whole-model forward passes of an HF Llama, eager: the kernel model's end-to-end check.

``python -m engine_profile forward --out DIR --model llama-2-7b`` builds a random-weight model
of the named shape (``attn_implementation="sdpa"``, bf16) and times, with nothing else running:

* *prefill*: ``model(input_ids[b, s], use_cache=True, logits_to_keep=1)`` -- a fresh
  ``DynamicCache`` is filled, one next-token logit per sequence, as ``generate`` runs a prompt;
* *decode*: one step ``model(input_ids[b, 1], past_key_values=cache, logits_to_keep=1)`` over a
  ``DynamicCache`` already holding ``L`` tokens per sequence (random K/V), cropped back to
  ``L`` after every step (``DynamicCache.update`` concatenates: each step copies the cache).

Each shape: 2 warm-ups, then repeats timed by the host clock between two
``torch.cuda.synchronize()`` calls (what a caller waits) and by CUDA events (device time).
For a few shapes ``torch.profiler`` lists every kernel the forward launched (name, calls,
device time): ``forward-kernels.csv``, the ground truth for the cost model's kernel accounting.
"""

from __future__ import annotations

import os
import statistics
import time

from .hf_cb import EngineSettings, build_model, metadata, write_csv

FORWARD_COLUMNS = ["model", "phase", "batch", "tokens", "context", "repeats", "wall_s",
                   "wall_p10_s", "wall_p90_s", "device_s", "host_cpu_s"]
KERNEL_COLUMNS = ["model", "phase", "batch", "tokens", "context", "kernel", "calls",
                  "device_total_s"]


def forward_shapes(max_context: int, quick: bool = False):
    """(phase, batch, new tokens per sequence, cached context per sequence)."""
    if quick:
        return [("prefill", 1, 64, 0), ("decode", 2, 1, 64)]
    pre = [(1, 128), (1, 512), (1, 1024), (1, 2048), (1, 4096), (1, 8192), (4, 1024),
           (2, 4096)]
    dec = [(1, 512), (1, 4096), (8, 1024), (16, 2048), (32, 512), (64, 1024), (4, 7000)]
    return ([("prefill", b, s, 0) for b, s in pre if s <= max_context]
            + [("decode", b, 1, L) for b, L in dec if L < max_context])


def _filled_cache(torch, model, batch, context):
    from transformers import DynamicCache
    cfg = model.config
    hd = cfg.hidden_size // cfg.num_attention_heads
    cache = DynamicCache(config=cfg)
    for layer in range(cfg.num_hidden_layers):
        shape = (batch, cfg.num_key_value_heads, context, hd)
        k = torch.randn(shape, device=model.device, dtype=model.dtype)
        cache.update(k, torch.randn_like(k), layer)
    return cache


def _call(torch, model, phase, batch, tokens, context):
    """A zero-argument function running one forward of the shape, and a cleanup."""
    from transformers import DynamicCache
    vocab = model.config.vocab_size
    ids = torch.randint(3, vocab, (batch, tokens), device=model.device)
    if phase == "prefill":
        def run():
            return model(input_ids=ids, past_key_values=DynamicCache(config=model.config),
                         use_cache=True, logits_to_keep=1)
        return run
    cache = _filled_cache(torch, model, batch, context)
    pos = torch.full((batch, 1), context, device=model.device, dtype=torch.long)

    def run():
        out = model(input_ids=ids, past_key_values=cache, position_ids=pos, use_cache=True,
                    logits_to_keep=1)
        cache.crop(-tokens)
        return out
    return run


def time_forward(torch, run, reps: int, cuda: bool) -> dict:
    for _ in range(2):
        run()
    walls, devs, cpus = [], [], []
    for _ in range(reps):
        if cuda:
            torch.cuda.synchronize()
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
        c0, t0 = time.thread_time(), time.perf_counter()
        run()
        if cuda:
            e.record()
            torch.cuda.synchronize()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.thread_time() - c0)
        devs.append(s.elapsed_time(e) * 1e-3 if cuda else walls[-1])
    walls.sort()
    return {"repeats": reps, "wall_s": statistics.median(walls),
            "wall_p10_s": walls[int(0.1 * (len(walls) - 1))],
            "wall_p90_s": walls[int(0.9 * (len(walls) - 1))],
            "device_s": statistics.median(devs), "host_cpu_s": statistics.median(cpus)}


def kernel_breakdown(torch, run) -> list[dict]:
    """Kernels one forward launches: name, calls, total device seconds (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile
    run()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        run()
        torch.cuda.synchronize()
    agg: dict[str, list] = {}
    for ev in prof.events():
        if ev.device_type.name != "CUDA":
            continue
        a = agg.setdefault(ev.name[:180].replace(",", ";"), [0, 0.0])
        a[0] += 1
        try:
            us = ev.device_time_total
        except Exception:  # noqa: BLE001 -- older profilers
            us = ev.time_range.elapsed_us()
        a[1] += us * 1e-6
    return [{"kernel": k, "calls": c, "device_total_s": t} for k, (c, t) in
            sorted(agg.items(), key=lambda kv: -kv[1][1])]


def run_forward(model_name: str, out: str, device: str = "cuda", quick: bool = False,
                reps: int = 7, profile_shapes=(("prefill", 1, 2048, 0), ("decode", 16, 1, 2048),
                                                ("decode", 1, 1, 512))):
    import torch
    settings = EngineSettings.for_model(model_name, attn_implementation="sdpa")
    model = build_model(settings, device)
    cuda = device != "cpu"
    meta = metadata(settings, {"kind": "whole-model forward passes (eager)",
                               "forward": "model(input_ids, past_key_values=DynamicCache, "
                                          "use_cache=True, logits_to_keep=1); sdpa attention",
                               "timing": "wall: host clock between cuda.synchronize() calls; "
                                         "device: CUDA events; median of repeats after 2 "
                                         "warm-ups"})
    rows, krows = [], []
    path = os.path.join(out, f"forward-{model_name}.csv")
    kpath = os.path.join(out, f"forward-kernels-{model_name}.csv")
    with torch.no_grad():
        for phase, b, t, L in forward_shapes(settings.max_position_embeddings, quick):
            try:
                run = _call(torch, model, phase, b, t, L)
                r = time_forward(torch, run, 2 if quick else reps, cuda)
                rows.append({"model": model_name, "phase": phase, "batch": b, "tokens": t,
                             "context": L, **r})
                print(f"  forward {model_name} {phase} b={b} t={t} L={L}: "
                      f"wall {1e3 * r['wall_s']:.2f} ms, device {1e3 * r['device_s']:.2f} ms",
                      flush=True)
                if cuda and (phase, b, t, L) in profile_shapes:
                    krows += [{"model": model_name, "phase": phase, "batch": b, "tokens": t,
                               "context": L, **k} for k in kernel_breakdown(torch, run)]
                del run
            except Exception as exc:  # noqa: BLE001 -- e.g. out of memory: the rest still run
                print(f"  forward {phase} b={b} t={t} L={L} failed: {type(exc).__name__}: "
                      f"{str(exc)[:160]}", flush=True)
            if cuda:
                torch.cuda.empty_cache()
            write_csv(path, rows, FORWARD_COLUMNS, meta)
            if krows:
                write_csv(kpath, krows, KERNEL_COLUMNS, meta)
    del model
    return rows
