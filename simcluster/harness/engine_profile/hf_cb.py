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
from dataclasses import asdict, dataclass

import numpy as np

ENGINE_NAME = "hf-transformers-cb"

#: Columns of the per-iteration CSV (meaning: hwspecs/engines/README.md).
ITERATION_COLUMNS = ["phase", "start_s", "iteration_s", "prefill_seqs", "prefill_tokens",
                     "prefill_context_tokens", "decode_seqs", "decode_context_tokens",
                     "samples", "kv_blocks", "waiting", "host_cpu_s", "graph_capture",
                     "prefill_detail"]
#: Columns of the per-request replay CSV.
REQUEST_COLUMNS = ["request_id", "arrival_s", "prompt_tokens", "output_tokens", "submit_s",
                   "first_token_s", "finish_s", "generated", "ttft_s", "tpot_s", "e2e_s",
                   "soft_resets", "error"]


#: Model shapes the profiler serves (random weights from a config; nothing is downloaded).
#: ``llama-2-7b``: meta-llama/Llama-2-7b-hf's config.json; ``llama-3-8b``: meta-llama/Meta-
#: Llama-3-8B's (GQA: 8 KV heads, 128k vocabulary); ``tiny``: a 2-layer toy for CPU tests.
MODEL_SHAPES = {
    "llama-2-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=32, vocab_size=32000,
                       max_position_embeddings=4096, rope_theta=10000.0),
    "llama-3-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                       max_position_embeddings=8192, rope_theta=500000.0),
    "tiny": dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, vocab_size=1000,
                 max_position_embeddings=4096, rope_theta=10000.0),
}
SHAPE_KEYS = tuple(MODEL_SHAPES["llama-2-7b"])


def shape_from_hf_config(path: str) -> dict:
    """The shape fields of a Hugging Face ``config.json`` (a Llama-architecture model)."""
    import json
    with open(path) as f:
        cfg = json.load(f)
    missing = [k for k in SHAPE_KEYS if k not in cfg and k not in ("rope_theta",
                                                                    "num_key_value_heads")]
    if missing:
        raise ValueError(f"{path}: config lacks {missing}")
    out = {k: cfg[k] for k in SHAPE_KEYS if k in cfg}
    out.setdefault("num_key_value_heads", cfg["num_attention_heads"])
    rope = cfg.get("rope_theta") or (cfg.get("rope_parameters") or {}).get("rope_theta", 1e4)
    out["rope_theta"] = float(rope)
    return out


@dataclass(frozen=True)
class EngineSettings:
    """The engine's scheduling, memory and execution settings (transformers'
    ``ContinuousBatchingConfig`` names), fixed explicitly so the simulator's ``hf_cb`` policy
    and the engine spec can mirror them, and the model shape it serves."""

    block_size: int = 256
    num_blocks: int = 256
    max_batch_tokens: int = 2048
    max_requests_per_batch: int = 256
    safety_margin: float = 0.15
    scheduler_type: str = "fifo"
    attn_implementation: str = "paged|sdpa"
    # CUDA graphs on the (only available) varlen path; padding intervals in tokens (0: the
    # engine's defaults, 64 and 16384)
    use_cuda_graph: bool = False
    q_padding_interval_size: int = 0
    kv_padding_interval_size: int = 0
    # model shape (default: Llama-2-7B), random weights, bf16
    model_name: str = "llama-2-7b"
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int = 32
    vocab_size: int = 32000
    max_position_embeddings: int = 4096
    rope_theta: float = 10000.0

    @classmethod
    def for_model(cls, name: str, **engine) -> "EngineSettings":
        """Settings for a preset shape (:data:`MODEL_SHAPES`), engine fields overridden."""
        if name not in MODEL_SHAPES:
            raise ValueError(f"unknown model shape {name!r}; known: {', '.join(MODEL_SHAPES)}")
        return cls(**{**MODEL_SHAPES[name], "model_name": name, **engine})

    @property
    def regime(self) -> str:
        return "cuda-graphs" if self.use_cuda_graph else "eager"


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
        self._captured = 0
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
    _instrument_captures()
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
        lg._captured = 0
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
                   "waiting": waiting, "host_cpu_s": cpu, "graph_capture": lg._captured,
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


def _instrument_captures():
    """Count CUDA-graph captures per iteration (a capture runs the forward twice and records
    it: such iterations are transients, kept out of fits)."""
    try:
        from transformers.generation.continuous_batching import model_runner as mr
    except ImportError:        # older transformers: no graph path
        return
    from transformers.generation.continuous_batching import continuous_api as ca
    orig = mr.ModelRunner._capture_graph

    def capture(self, *args, **kw):
        ca.ContinuousBatchProcessor._simcluster_log._captured += 1
        return orig(self, *args, **kw)
    mr.ModelRunner._capture_graph = capture


def llama_config(s: EngineSettings):
    from transformers import LlamaConfig
    return LlamaConfig(vocab_size=s.vocab_size, hidden_size=s.hidden_size,
                       intermediate_size=s.intermediate_size,
                       num_hidden_layers=s.num_hidden_layers,
                       num_attention_heads=s.num_attention_heads,
                       num_key_value_heads=s.num_key_value_heads,
                       max_position_embeddings=s.max_position_embeddings, rms_norm_eps=1e-5,
                       rope_theta=s.rope_theta, bos_token_id=1, eos_token_id=2,
                       pad_token_id=0, tie_word_embeddings=False)


def build_model(settings: EngineSettings, device: str = "cuda", seed: int = 0):
    """A random-weight Llama-architecture model of the settings' shape (bf16 on a GPU)."""
    import torch
    from transformers import LlamaForCausalLM
    torch.manual_seed(seed)
    dtype = torch.bfloat16 if device != "cpu" else torch.float32
    with torch.device(device):
        model = LlamaForCausalLM._from_config(llama_config(settings),
                                              attn_implementation=settings.attn_implementation,
                                              dtype=dtype)
    model.eval()
    return model


def start_manager(model, settings: EngineSettings, log: "IterationLog", seed: int = 0):
    """A started continuous-batching manager on ``model`` with ``settings``."""
    from transformers import GenerationConfig
    from transformers.generation.configuration_utils import ContinuousBatchingConfig
    s = settings
    # EOS disabled (-1): output lengths follow the requests' max_new_tokens
    gen = GenerationConfig(do_sample=False, max_new_tokens=16, eos_token_id=-1, pad_token_id=0,
                           bos_token_id=1)
    cb = ContinuousBatchingConfig(block_size=s.block_size, num_blocks=s.num_blocks,
                                  max_batch_tokens=s.max_batch_tokens,
                                  max_requests_per_batch=s.max_requests_per_batch,
                                  scheduler_type=s.scheduler_type, safety_margin=s.safety_margin,
                                  allow_block_sharing=False, use_async_batching=False,
                                  use_cuda_graph=s.use_cuda_graph,
                                  q_padding_interval_size=s.q_padding_interval_size,
                                  kv_padding_interval_size=s.kv_padding_interval_size,
                                  seed=seed)
    log.vocab = s.vocab_size
    _instrument(log)
    manager = model.init_continuous_batching(generation_config=gen,
                                             continuous_batching_config=cb)
    manager.start()
    return manager


def build_engine(settings: EngineSettings, device: str = "cuda", seed: int = 0):
    """The model (random weights, bf16, on ``device``) and a started CB manager."""
    model = build_model(settings, device, seed)
    log = IterationLog()
    manager = start_manager(model, settings, log, seed)
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
    meta["model"] = f"{settings.model_name} shape (random weights, bf16)"
    meta["regime"] = settings.regime
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


