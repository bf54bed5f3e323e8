"""Hugging Face transformers continuous batching, instrumented: one row per engine iteration.

The engine is used as shipped (transformers 5.x ``ContinuousBatchingManager``): a background
thread loops ``prepare_next_batch`` (FIFO scheduling, KV block allocation, building the packed
inputs, the read/write indices and the dense attention mask on the host) -> ``_generation_step``
(one eager forward of all scheduled tokens, argmax sampling, a blocking copy of the sampled
tokens to the host) -> ``update_batch``. We wrap two methods to time each pass of that loop
and to read the batch it ran; nothing in the engine's behaviour changes.

An *iteration* is one pass of ``_generation_loop_body`` that ran a batch, timed with
``time.perf_counter`` from its start to the end of ``update_batch``. That is the interval the
requests in it wait, which is what a simulator's iteration time must reproduce.
"""

from __future__ import annotations

import csv
import datetime as _dt
import os
import platform
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field

import numpy as np

ENGINE_NAME = "hf-transformers-cb"

#: Columns of the per-iteration CSV (meaning: hwspecs/engines/README.md).
ITERATION_COLUMNS = ["phase", "start_s", "iteration_s", "prefill_seqs", "prefill_tokens",
                     "prefill_context_tokens", "decode_seqs", "decode_context_tokens",
                     "samples", "kv_blocks", "waiting", "host_cpu_s", "prefill_detail"]
#: Columns of the per-request replay CSV.
REQUEST_COLUMNS = ["request_id", "arrival_s", "prompt_tokens", "output_tokens", "submit_s",
                   "first_token_s", "finish_s", "generated", "ttft_s", "tpot_s", "e2e_s",
                   "soft_resets", "error"]


@dataclass(frozen=True)
class EngineSettings:
    """The engine's scheduling and memory settings (transformers' ``ContinuousBatchingConfig``
    names), fixed explicitly so the simulator's ``hf_cb`` policy can mirror them."""

    block_size: int = 256
    num_blocks: int = 256
    max_batch_tokens: int = 2048
    max_requests_per_batch: int = 256
    safety_margin: float = 0.15
    scheduler_type: str = "fifo"
    attn_implementation: str = "paged|sdpa"
    # Llama-2-7B shape (meta-llama/Llama-2-7b-hf config.json), random weights, bf16
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int = 32
    vocab_size: int = 32000
    max_position_embeddings: int = 4096


class IterationLog:
    """Rows of the iterations the engine ran, plus first/last token times per request."""

    def __init__(self):
        self.rows: list[dict] = []
        self.phase = "warmup"
        self.vocab = 32000
        self.t0 = time.perf_counter()
        self.t0_unix = time.time()
        self.first_token: dict[str, float] = {}
        self.last_token: dict[str, float] = {}
        self._pending = None
        self.lock = threading.Lock()

    def take(self, phase: str | None = None) -> list[dict]:
        with self.lock:
            rows = [r for r in self.rows if phase is None or r["phase"] == phase]
        return rows


def _instrument(log: IterationLog):
    """Wrap the engine's loop body and batch preparation to fill ``log``."""
    from transformers.generation.continuous_batching import continuous_api as ca

    if getattr(ca.ContinuousBatchProcessor, "_simcluster_wrapped", False):
        ca.ContinuousBatchProcessor._simcluster_log = log
        return
    orig_prepare = ca.ContinuousBatchProcessor.prepare_next_batch
    orig_body = ca.ContinuousBatchingManager._generation_loop_body

    def prepare_next_batch(self):
        ok = orig_prepare(self)
        if ok:
            lg = ca.ContinuousBatchProcessor._simcluster_log
            io = self.inputs_and_outputs
            batch = []
            for fs in io.requests_in_batch:
                st = fs.state
                q = int(fs.query_length)
                past = int(st.position_offset) - q     # prepare_batch_tensors advanced it
                decoding = past >= len(st.initial_tokens)
                batch.append((st.request_id, q, past, bool(fs.has_new_token), decoding))
            cache = self.cache
            lg._pending = (batch, cache.num_blocks - cache.get_num_free_blocks(),
                           len(self.scheduler.waiting_requests))
        return ok

    def body(self, batch_processor, bootstrapping):
        lg = ca.ContinuousBatchProcessor._simcluster_log
        lg._pending = None
        c0 = time.thread_time()
        t0 = time.perf_counter()
        out = orig_body(self, batch_processor, bootstrapping)
        t1 = time.perf_counter()
        cpu = time.thread_time() - c0
        pending, lg._pending = lg._pending, None
        if pending is not None:
            batch, blocks, waiting = pending
            pre = [(q, p) for _, q, p, _, dec in batch if not dec]
            dec = [(q, p) for _, q, p, _, d in batch if d]
            row = {"phase": lg.phase, "start_s": t0 - lg.t0, "iteration_s": t1 - t0,
                   "prefill_seqs": len(pre), "prefill_tokens": sum(q for q, _ in pre),
                   "prefill_context_tokens": sum(p for _, p in pre),
                   "decode_seqs": sum(q for q, _ in dec),
                   "decode_context_tokens": sum(p + q for q, p in dec),
                   "samples": sum(1 for b in batch if b[3]), "kv_blocks": blocks,
                   "waiting": waiting, "host_cpu_s": cpu,
                   "prefill_detail": ";".join(f"{q}/{p}" for q, p in pre)}
            with lg.lock:
                lg.rows.append(row)
                for rid, _, _, new, _ in batch:
                    if new:
                        lg.first_token.setdefault(rid, t1)
                        lg.last_token[rid] = t1
        return out

    ca.ContinuousBatchProcessor.prepare_next_batch = prepare_next_batch
    ca.ContinuousBatchingManager._generation_loop_body = body
    ca.ContinuousBatchProcessor._simcluster_wrapped = True
    ca.ContinuousBatchProcessor._simcluster_log = log


def build_engine(settings: EngineSettings, device: str = "cuda", seed: int = 0):
    """The model (random weights, bf16, on ``device``) and a started CB manager."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM
    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    torch.manual_seed(seed)
    s = settings
    cfg = LlamaConfig(vocab_size=s.vocab_size, hidden_size=s.hidden_size,
                      intermediate_size=s.intermediate_size,
                      num_hidden_layers=s.num_hidden_layers,
                      num_attention_heads=s.num_attention_heads,
                      num_key_value_heads=s.num_key_value_heads,
                      max_position_embeddings=s.max_position_embeddings, rms_norm_eps=1e-5,
                      bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
    dtype = torch.bfloat16 if device != "cpu" else torch.float32
    with torch.device(device):
        model = LlamaForCausalLM._from_config(cfg, attn_implementation=s.attn_implementation,
                                              dtype=dtype)
    model.eval()
    # EOS disabled (-1): output lengths follow the requests' max_new_tokens
    gen = GenerationConfig(do_sample=False, max_new_tokens=16, eos_token_id=-1, pad_token_id=0,
                           bos_token_id=1)
    cb = ContinuousBatchingConfig(block_size=s.block_size, num_blocks=s.num_blocks,
                                  max_batch_tokens=s.max_batch_tokens,
                                  max_requests_per_batch=s.max_requests_per_batch,
                                  scheduler_type=s.scheduler_type, safety_margin=s.safety_margin,
                                  allow_block_sharing=False, use_async_batching=False,
                                  use_cuda_graph=False, seed=seed)
    log = IterationLog()
    log.vocab = s.vocab_size
    _instrument(log)
    manager = model.init_continuous_batching(generation_config=gen,
                                             continuous_batching_config=cb)
    manager.start()
    return model, manager, log


@dataclass
class Submission:
    """One request to submit: arrival time (s after the phase starts), lengths."""

    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    request_id: str = ""


def run_requests(manager, log: IterationLog, subs: list[Submission], phase: str, *,
                 seed: int = 0, deadline_s: float = 600.0) -> list[dict]:
    """Submit ``subs`` at their arrival times (a submitter thread sleeps until each), collect
    every result, and return one dict per request (times relative to the phase start)."""
    rng = np.random.default_rng(seed)
    prompts = [rng.integers(3, log.vocab, size=s.prompt_tokens).tolist() for s in subs]
    log.phase = phase
    submitted: dict[str, tuple[int, float]] = {}
    t0 = time.perf_counter()
    done_submitting = threading.Event()

    def submit():
        for i, (s, ids) in enumerate(zip(subs, prompts)):
            wait = t0 + s.arrival_s - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            rid = s.request_id or f"{phase}-{i}"
            t = time.perf_counter()
            manager.add_request(ids, request_id=rid, max_new_tokens=int(s.output_tokens),
                                record_timestamps=True)
            submitted[rid] = (i, t)
        done_submitting.set()

    th = threading.Thread(target=submit, daemon=True)
    th.start()
    results = {}
    while True:
        if done_submitting.is_set() and len(results) >= len(subs):
            break
        if time.perf_counter() - t0 > deadline_s:
            print(f"  [{phase}] deadline {deadline_s:.0f}s reached with "
                  f"{len(subs) - len(results)} requests unfinished", flush=True)
            break
        res = manager.get_result(timeout=0.2)
        if res is not None and res.is_finished():
            results[res.request_id] = res
        elif res is None and not manager.is_running():
            print(f"  [{phase}] engine thread stopped", flush=True)
            break
    th.join(timeout=1.0)
    left = [rid for rid in list(submitted) if rid not in results]
    if left:        # cancel what the deadline cut off, so the next phase starts clean
        for rid in left:
            manager.cancel_request(rid)
        time.sleep(1.0)
        while manager.get_result(timeout=0.05) is not None:
            pass
    rows = []
    for rid, (i, t_sub) in sorted(submitted.items(), key=lambda kv: kv[1][0]):
        s, res = subs[i], results.get(rid)
        row = {"request_id": rid, "arrival_s": s.arrival_s, "prompt_tokens": s.prompt_tokens,
               "output_tokens": s.output_tokens, "submit_s": t_sub - t0}
        first = log.first_token.get(rid)
        last = log.last_token.get(rid)
        ts = list(res.timestamps or []) if res is not None else []
        gen = len(res.generated_tokens) if res is not None else 0
        resets = int(res is not None and len(ts) < gen)
        if ts and not resets:      # the engine's own per-token timestamps
            first, last = ts[0], ts[-1]
        row["first_token_s"] = (first - t0) if first is not None else float("nan")
        row["finish_s"] = (last - t0) if (last is not None and res is not None) else float("nan")
        row["generated"] = gen
        # latencies from the request's *scheduled* arrival (the submitter lags it by < 1 ms)
        row["ttft_s"] = row["first_token_s"] - s.arrival_s
        row["e2e_s"] = row["finish_s"] - s.arrival_s
        row["tpot_s"] = ((row["finish_s"] - row["first_token_s"]) / (gen - 1)
                         if gen > 1 else float("nan"))
        row["soft_resets"] = resets
        row["error"] = "" if res is not None and not res.error else (
            (res.error if res is not None else "unfinished") or "")
        rows.append(row)
    return rows


# -- metadata and files ---------------------------------------------------------------------

def metadata(settings: EngineSettings, extra: dict | None = None) -> dict:
    """Device, software and settings: the ``# key: value`` header of every file written."""
    import torch
    import transformers
    meta = {"engine": ENGINE_NAME,
            "engine_version": f"transformers {transformers.__version__}",
            "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
            "torch": torch.__version__, "cuda": str(torch.version.cuda),
            "python": platform.python_version(), "host": platform.node()}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        meta["device_name"] = torch.cuda.get_device_name(0)
        meta["device_memory_gib"] = f"{p.total_memory / 2**30:.1f}"
        meta["sm_count"] = str(p.multi_processor_count)
        try:
            drv = subprocess.run(["nvidia-smi", "--query-gpu=driver_version",
                                  "--format=csv,noheader"], capture_output=True, text=True,
                                 timeout=10).stdout.strip()
            meta["driver"] = drv.splitlines()[0] if drv else ""
        except (OSError, subprocess.SubprocessError):
            meta["driver"] = ""
    else:
        meta["device_name"] = "cpu"
    meta["model"] = "llama-2-7b shape (random weights, bf16)"
    meta["settings"] = ", ".join(f"{k}={v}" for k, v in asdict(settings).items())
    meta.update(extra or {})
    return meta


def write_csv(path: str, rows: list[dict], columns: list[str], meta: dict):
    """``# key: value`` header lines, then a CSV header and the rows."""
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        for k, v in meta.items():
            f.write(f"# {k}: {v}\n")
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    os.replace(tmp, path)


def read_requests(path: str) -> list[Submission]:
    """A trace slice: CSV with arrival_s, prompt_tokens, output_tokens (``#`` comments ok)."""
    subs = []
    with open(path) as f:
        lines = [ln for ln in f if not ln.startswith("#")]
    for r in csv.DictReader(lines):
        subs.append(Submission(float(r["arrival_s"]), int(r["prompt_tokens"]),
                               int(r["output_tokens"])))
    t0 = subs[0].arrival_s if subs else 0.0
    return [Submission(s.arrival_s - t0, s.prompt_tokens, s.output_tokens) for s in subs]


def rescale(subs: list[Submission], rate_per_s: float | None, max_requests: int | None = None):
    """Keep the arrival pattern, compress or stretch time to ``rate_per_s`` on average."""
    subs = subs[:max_requests] if max_requests else list(subs)
    if rate_per_s and len(subs) > 1:
        span = subs[-1].arrival_s - subs[0].arrival_s
        k = (len(subs) - 1) / rate_per_s / span
        subs = [Submission(s.arrival_s * k, s.prompt_tokens, s.output_tokens) for s in subs]
    return subs


# -- the synthetic profiling sweep ----------------------------------------------------------

@dataclass(frozen=True)
class Group:
    """Synthetic batch: ``n`` requests of ``prompt`` tokens generating ``output`` tokens,
    submitted together (``spacing_s`` apart), optionally over a background of decoders."""

    name: str
    subs: tuple = field(default_factory=tuple)


def serving_sweep(settings: EngineSettings, quick: bool = False, seed: int = 0) -> list[Group]:
    """Profiling groups shaped like serving: a *background* of ``n`` sequences with prompts of
    ``p`` tokens decodes while single prompts of controlled sizes are *injected* one at a time,
    ``spacing_s`` apart (each generates two tokens), so every prompt chunk is timed inside a
    decode batch of known size and context, as prompts arrive in a served trace. (Prompts
    computed back to back, as at the start of :func:`sweep`'s groups, run measurably faster
    per token than prompts interleaved with decode steps on this engine.)

    Backgrounds span 1 to 192 decoding sequences and 1k to 41k KV tokens; injected prompts
    64 to 3000 tokens (3000 is chunked: 2048, then 952 reading the first chunk's KV).
    """
    bs = settings.block_size
    room = (1 - settings.safety_margin) * settings.num_blocks - 3000 // bs - 2
    out_bg = 12 if quick else 50
    backgrounds = ([(8, 512)] if quick else
                   [(1, 1024), (8, 512), (16, 2000), (32, 1024), (48, 256), (64, 512),
                    (96, 256), (24, 1500), (12, 3000), (40, 1024), (128, 16), (192, 16)])
    sizes = [512, 2048] if quick else [64, 512, 1024, 2048, 3000, 256, 1536]
    spacing = 0.45
    groups = []
    for n, p in backgrounds:
        if n * ((p + out_bg + 1) // bs + 1) > room:
            continue
        subs = [Submission(0.0, p, out_bg) for _ in range(n)]
        # first injection once the background's prompts are done (~2048 tokens/iteration)
        t = 0.15 * (n * p // settings.max_batch_tokens + 1) + 0.3
        for k, size in enumerate(sizes):
            subs.append(Submission(t + spacing * k, size, 2))
        groups.append(Group(f"serve-n{n}-p{p}", tuple(subs)))
    return groups


def sweep(settings: EngineSettings, quick: bool = False, seed: int = 0) -> list[Group]:
    """The profiling groups, most informative first (a time cap keeps a prefix of them).

    Steady decode of ``n`` sequences with prompts of ``p`` tokens (so KV per sequence from p
    to p + out), the prefills that start each group (chunks of up to ``max_batch_tokens``
    packed from several prompts, later chunks reading earlier ones' KV), and mixed iterations
    (prompts arriving while a background of sequences decodes).
    """
    rng = np.random.default_rng(seed)
    out_steps = 8 if quick else 24
    bs = settings.block_size
    # the engine allocates (len + 1) // block_size + 1 blocks; keep every group's final KV
    # under the scheduler's safety margin so that all its requests run together
    room = (1 - settings.safety_margin - 0.01) * settings.num_blocks
    grid = []
    ns = [1, 8, 64] if quick else [1, 2, 4, 8, 16, 24, 32, 40, 48, 64, 96, 128, 192]
    ps = [1024] if quick else [16, 256, 1024, 2000, 3000]
    for p in ps:
        for n in ns:
            if n * ((p + out_steps + 1) // bs + 1) <= room:
                grid.append((n, p))
    order = rng.permutation(len(grid))
    groups = []
    for i in order:
        n, p = grid[i]
        groups.append(Group(f"decode-n{n}-p{p}",
                            tuple(Submission(0.0, p, out_steps) for _ in range(n))))
    # pure prefills: one prompt of each size, two output tokens
    for p in ([512, 2048] if quick else [32, 128, 512, 1024, 2048, 3000]):
        groups.append(Group(f"prefill-p{p}", (Submission(0.0, p, 2),)))
    if not quick:
        # mixed: a background of decoders, prompts of random length arriving every 150 ms
        for n_bg, p_bg in ((16, 512), (48, 256), (8, 2000)):
            subs = [Submission(0.0, p_bg, 120) for _ in range(n_bg)]
            for k in range(12):
                subs.append(Submission(0.4 + 0.15 * k, int(rng.integers(64, 2500)), 16))
            groups.append(Group(f"mixed-bg{n_bg}-p{p_bg}", tuple(subs)))
    return groups
