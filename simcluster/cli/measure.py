"""Commands that predict, measure and validate: ``predict``, ``validate``, ``calibrate``,
``calibrate-engine``, ``validate-e2e``."""

from __future__ import annotations

import re

from simcluster.cli.checks import (non_negative_int, positive_float, positive_int,
                                   unused_with, unused_without)
from simcluster.errors import InputError


def cmd_predict(args) -> int:
    import pandas as pd

    from simcluster.calibration import load_calibration
    from simcluster.cli.checks import in_file, out_file, reading
    from simcluster.cost import CostModel
    from simcluster.cost.predict import (OP_FIELDS, OPTIONAL, iteration_memory, predict_frame,
                                         predict_iteration)
    out = out_file(args.output)
    cost = CostModel(load_calibration(args.calibration))
    if args.input:
        path = in_file(args.input, "--in")
        with reading(path):
            from simcluster.workload._columns import unique_file_header
            unique_file_header(path)
            shapes = pd.read_csv(path)
            result = predict_frame(cost, shapes, file=str(path))
        if out is not None:
            result.to_csv(out, index=False)
            print(f"wrote {len(result)} predictions to {out}")
        else:
            print(result.to_string(index=False))
        return 0
    if args.op:
        if not args.device:
            raise InputError("predict --op needs --device", field="--device")
        shape = {k: v for k, v in vars(args).items()
                 if k in ("m", "n", "k", "tokens", "context", "batch", "kv_len", "num_heads",
                          "num_kv_heads", "head_dim", "bytes") and v is not None}
        missing = [k for k in OP_FIELDS[args.op] if k not in shape and k not in OPTIONAL]
        if missing:
            raise InputError(f"predict --op {args.op} needs "
                             f"{', '.join('--' + k.replace('_', '-') for k in missing)}",
                             field="--op")
        other = sorted(k for k in shape if k not in OP_FIELDS[args.op])
        if other:
            flag = "--" + other[0].replace("_", "-")
            own = ", ".join("--" + k.replace("_", "-") for k in OP_FIELDS[args.op])
            raise InputError(f"does nothing for --op {args.op}, whose shape is {own}",
                             field=flag)
        from simcluster.hardware import load_device
        p = cost.predict_op(args.op, load_device(args.device), **shape)
        for k, v in p.items():
            print(f"{k:>22}  {v}")
        return 0
    if not (args.model and args.device):
        raise InputError("predict needs --in CSV, or --op with --device, or --model and "
                         "--device", field="--model" if args.device else "--device")
    if args.link and args.tp * args.pp == 1:
        raise InputError("does nothing with one device (--tp and --pp 1): it joins the ranks",
                         field="--link")
    shape = dict(tp=args.tp, pp=args.pp, link=args.link, prefill_seqs=args.prefill_seqs,
                 prefill_tokens=args.prefill_tokens, prefill_context=args.prefill_context,
                 decode_seqs=args.decode_seqs, decode_context=args.decode_context)
    t, prov = predict_iteration(cost, args.model, args.device, **shape)
    _, memory = iteration_memory(args.model, args.device, **shape)
    print(f"iteration time {t * 1e3:.4f} ms  ({prov})")
    print(f"memory: {memory}")
    return 0


def cmd_calibrate(args) -> int:
    """Run the kernel micro-benchmark suite on this machine's GPU and CPU (needs torch)."""
    import importlib.util

    from simcluster.cli.checks import out_dir
    out_dir(args.out)
    if importlib.util.find_spec("torch") is None:
        raise InputError("calibrate measures kernels with PyTorch, which is not installed: "
                         "pip install 'simcluster[calibrate]'", field="calibrate")
    from simcluster.harness.kernels.__main__ import main as bench_main, parse_only
    from simcluster.harness.kernels.__main__ import select_tables
    try:
        only = parse_only(args.only)
    except ValueError as err:
        raise InputError(str(err), field="--only") from None
    import torch
    cuda = torch.cuda.is_available()
    try:                            # (before anything is written: a GPU table without a GPU)
        select_tables(only, has_cuda=cuda, gpu_count=torch.cuda.device_count() if cuda else 0)
    except RuntimeError as err:
        raise InputError(str(err), field="--only") from None
    argv = ["--out", args.out] + (["--quick"] if args.quick else []) + \
        (["--only", args.only] if args.only else [])
    return bench_main(argv) or 0


def cmd_validate(args) -> int:
    from simcluster.calibration import load_calibration
    from simcluster.analysis.calibration_validation import error_table, validate_table
    from simcluster.cli.checks import in_file, out_file, reading
    from simcluster.cost import CostModel
    out = out_file(args.out)
    path = in_file(args.measured)
    cost = CostModel(load_calibration(args.calibration))
    with reading(path):
        pred = validate_table(cost, path, args.device)
    print(error_table(pred).round(2).to_string())
    ape = pred.error.abs() * 100
    print(f"all: n={len(pred)} median {ape.median():.2f}% p90 {ape.quantile(0.9):.2f}% "
          f"max {ape.max():.2f}%")
    if out is not None:
        pred.to_csv(out, index=False)
        print(f"wrote per-row predictions to {out}")
    return 0


def cmd_calibrate_engine(args) -> int:
    """Fit an engine model to per-iteration logs and write hwspecs/engines/ENGINE.toml."""
    from simcluster.cli.checks import each_once, in_file, reading
    from simcluster.engines.calibrate import calibrate, format_fit, write_spec
    if args.link and args.tp == 1:
        raise InputError("does nothing with one device (--tp 1): it joins the ranks",
                         field="--link")
    target = _engine_target(args.name, args.out, args.force)
    logs = [in_file(p) for p in args.logs + args.decode_only]
    each_once(args.logs + args.decode_only, logs, "logs", "log",
              "its iterations would count twice in the fit")
    sched = None
    if args.block_size or args.max_batched_tokens or args.max_num_seqs or args.chunked_prefill:
        sched = {k: v for k, v in (("block_size", args.block_size),
                                   ("max_batched_tokens", args.max_batched_tokens),
                                   ("max_num_seqs", args.max_num_seqs),
                                   ("chunked_prefill", args.chunked_prefill or None))
                 if v is not None}
    execution = None
    if args.execution:
        p_, _, d_ = args.execution.partition(",")
        execution = {"prefill": p_, "decode": d_ or p_}
    padding = None
    if args.q_padding or args.kv_padding:
        padding = {k: v for k, v in (("q_tokens", args.q_padding),
                                     ("kv_tokens", args.kv_padding)) if v}
    transfer = None
    if args.transfer:
        pairs = [kv.split("=", 1) for kv in args.transfer.split(",")]
        if any(len(kv) != 2 for kv in pairs):
            raise InputError(f"expected KEY=VALUE,..., got {args.transfer!r}",
                             field="--transfer")
        transfer = dict(pairs)
        from simcluster.engines.model import transfer_scales
        try:
            transfer_scales(None, None, transfer)
        except ValueError as err:
            raise InputError(str(err), field="--transfer") from None
    if args.batching is not None:
        from simcluster.policies import BATCHERS
        try:
            BATCHERS.lookup(args.batching)
        except InputError as err:
            raise InputError(err.reason, field="--batching") from None
    with reading(", ".join(map(str, logs))):
        spec, res = calibrate(args.logs, args.device, args.model, args.name,
                              calibration=args.calibration, batching=args.batching,
                              scheduler=sched, description=args.description or "",
                              scale_free=args.scale_device, decode_only=args.decode_only,
                              kernels=args.kernels, execution=execution, padding=padding,
                              tp=args.tp, link=args.link, transfer=transfer)
    from simcluster.analysis.engine_validation import check_engine_settings
    check_engine_settings(spec)         # (what a run would refuse is not written)
    print(format_fit(res))
    print(f"wrote {write_spec(spec, target)}")
    return 0


_ENGINE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _engine_target(name: str, out: str | None, force: bool):
    """Where ``calibrate-engine`` writes: ``--out``, else ``engines/NAME.toml`` of the first
    spec folder. NAME is a plain name (it cannot climb out of that folder); an existing spec
    (a bundled one included) is replaced only with ``--force``."""
    from simcluster.cli.checks import out_file
    from simcluster.engines.spec import bundled_engines_dir, engines_dir
    if not _ENGINE_NAME.fullmatch(name) or ".." in name:
        raise InputError(f"expected a plain engine name (letters, digits, '.', '_', '-'; no "
                         f"folders), got {name!r}; --out writes elsewhere", field="--name")
    target = out_file(out) if out else engines_dir() / f"{name}.toml"
    if target.exists() and not force:
        bundled = target.resolve().parent == bundled_engines_dir().resolve()
        shipped = " (an engine shipped with simcluster)" if bundled else ""
        raise InputError(f"{target} exists{shipped}; pass --force to replace it, or choose "
                         f"another {'--out' if out else '--name'}",
                         field="--out" if out else "--name")
    if not out:
        target.parent.mkdir(parents=True, exist_ok=True)
    return target


def cmd_validate_e2e(args) -> int:
    """Simulate measured replays with an engine model; print simulated vs measured."""
    from simcluster.analysis.engine_validation import validate_replay
    from simcluster.cli.checks import in_file, out_file, reading
    from simcluster.engines import load_engine
    out = out_file(args.out)
    overrides = {}
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"expected KEY=VALUE, got {item!r}", field="--set")
        overrides[key.strip()] = value.strip()
    spec = load_engine(args.engine)
    for path in [in_file(p) for p in args.replays]:
        with reading(path):
            cmp_ = validate_replay(path, spec, overrides)
        print(cmp_.format())
        if out is not None:
            cmp_.requests.to_csv(out, index=False)
            print(f"wrote per-request latencies to {out}")
    return 0


def add_commands(sub) -> None:
    q = sub.add_parser(
        "predict", help="predict an operator or an iteration",
        description="Predict one iteration (--model, --device and the batch flags), one "
                    "operator (--op, --device and its shape flags) or every row of a CSV of "
                    "shapes (--in), from the cost model and the device's calibration. An "
                    "iteration also says whether its weights, activations and KV cache fit "
                    "the devices' memory (the time is predicted either way).")
    q.add_argument("--in", dest="input", help="CSV of shapes (see simcluster.cost.predict)")
    q.add_argument("--out", dest="output", help="write predictions CSV here")
    q.add_argument("--calibration", default="measured",
                   help="measured (fitted from measured kernel tables, borrowed by "
                        "architecture family where a device has none) or datasheet (the "
                        "roofline at the device's peaks); default measured")
    q.add_argument("--op", choices=["gemm", "attn_prefill", "attn_decode", "elementwise"],
                   help="one operator, shaped by the flags below")
    q.add_argument("--device", help="device name (simcluster list devices)")
    q.add_argument("--model", help="model preset (simcluster list models) or a Hugging Face "
                                   "config.json")
    q.add_argument("--tp", type=positive_int, default=1, help="tensor-parallel degree "
                   "(an iteration; default 1)")
    q.add_argument("--pp", type=positive_int, default=1, help="pipeline stages (default 1)")
    q.add_argument("--link", help="link between ranks when --tp or --pp > 1 "
                                  "(simcluster list links)")
    shape_help = {"m": "gemm: rows of A and C", "n": "gemm: columns of B and C",
                  "k": "gemm: the inner dimension",
                  "tokens": "attn_prefill: new tokens of each sequence",
                  "context": "attn_prefill: tokens cached before them (default 0)",
                  "batch": "attn_prefill, attn_decode: sequences (attn_prefill default 1)",
                  "kv_len": "attn_decode: KV tokens each sequence attends to",
                  "num_heads": "attention: query heads", "num_kv_heads": "attention: KV heads",
                  "head_dim": "attention: head dimension"}
    for k, what in shape_help.items():
        q.add_argument(f"--{k.replace('_', '-')}", dest=k, help=what,
                       type=non_negative_int if k == "context" else positive_int)
    q.add_argument("--bytes", type=positive_float,
                   help="elementwise: bytes read plus written")
    batch_help = {"prefill_seqs": "prompts in the iteration (with --model)",
                  "prefill_tokens": "tokens each prompt prefills",
                  "prefill_context": "tokens each prompt has cached before them",
                  "decode_seqs": "sequences decoding one token each",
                  "decode_context": "KV tokens each decoding sequence attends to"}
    for k, what in batch_help.items():
        q.add_argument(f"--{k.replace('_', '-')}", dest=k, type=non_negative_int, default=0,
                       metavar="N", help=f"{what} (default 0)")
    # the three modes' flags: a flag of another mode did nothing
    shape = [f"--{k.replace('_', '-')}" for k in [*shape_help, "bytes"]]
    iteration = ["--model", "--tp", "--pp", "--link",
                 *[f"--{k.replace('_', '-')}" for k in batch_help]]
    for flag in ["--op", "--device", *shape, *iteration]:
        unused_with(q, flag, ("--in",), "the CSV's rows give every shape")
    for flag in iteration:
        unused_with(q, flag, ("--op",), "it shapes an iteration (--model), not an operator")
    for flag in shape:
        unused_without(q, flag, "--op", "it shapes one operator")
    unused_without(q, "--out", "--in", "it writes the predictions of a CSV of shapes")
    q.set_defaults(func=cmd_predict)
    c = sub.add_parser("calibrate", help="measure kernel tables on this machine (needs torch)")
    c.add_argument("--out", required=True, help="folder for the CSV tables and bench.log")
    c.add_argument("--quick", action="store_true",
                   help="a reduced grid (a smoke test: under 30 s on a CUDA machine)")
    c.add_argument("--only", help="comma-separated tables, e.g. gemm,attn_decode")
    c.set_defaults(func=cmd_calibrate)
    v = sub.add_parser("validate", help="predict every row of a measured CSV; print errors")
    v.add_argument("measured", help="a kernel table (calibration format) or an 'op' CSV "
                                    "with measured_time_s")
    v.add_argument("--device", help="device the table was measured on")
    v.add_argument("--calibration", default="measured",
                   help="measured (fitted from measured kernel tables, borrowed by "
                        "architecture family where a device has none) or datasheet (the "
                        "roofline at the device's peaks); default measured")
    v.add_argument("--out", help="write per-row predictions here")
    v.set_defaults(func=cmd_validate)
    ce = sub.add_parser("calibrate-engine",
                        help="fit an engine model to per-iteration logs "
                             "(hwspecs/engines/README.md)")
    ce.add_argument("logs", nargs="+", help="per-iteration CSV(s), fitted together")
    ce.add_argument("--device", required=True, help="device spec it ran on (list devices)")
    ce.add_argument("--model", required=True, help="model it served (list models)")
    ce.add_argument("--name", required=True,
                    help="engine name: written to engines/NAME.toml of the first spec folder "
                         "($SIMCLUSTER_HWSPECS, else the bundled hwspecs/)")
    ce.add_argument("--out", help="write the TOML here instead")
    ce.add_argument("--calibration", default="measured", help="device-time calibration")
    ce.add_argument("--batching", help="batching policy mirroring the engine (default: hf_cb "
                                       "for transformers logs, else vllm)")
    ce.add_argument("--block-size", type=positive_int,
                    help="KV block size (tokens) the engine ran with; this and the three "
                         "below go into the spec's scheduler settings")
    ce.add_argument("--max-batched-tokens", type=positive_int,
                    help="the engine's token budget per iteration")
    ce.add_argument("--max-num-seqs", type=positive_int,
                    help="the engine's most sequences per batch")
    ce.add_argument("--force", action="store_true",
                    help="replace an existing engine spec (a bundled one included)")
    ce.add_argument("--chunked-prefill", action="store_true",
                    help="the engine ran with chunked prefill")
    ce.add_argument("--decode-only", action="append", default=[], metavar="LOG",
                    help="a further log of which only decode iterations are fitted (e.g. a "
                         "sweep whose prompts ran back to back); repeatable")
    ce.add_argument("--kernels", help="kernel accounting (hwspecs/engines/kernels/: fused, "
                                      "hf-eager, hf-cb); default from a transformers log, "
                                      "else fused")
    ce.add_argument("--execution", help="graphs, eager or piecewise, or PREFILL,DECODE "
                                        "(e.g. piecewise,graphs); default from a transformers "
                                        "log, else graphs")
    ce.add_argument("--q-padding", type=non_negative_int, help="CUDA-graph padding of new tokens")
    ce.add_argument("--kv-padding", type=non_negative_int,
                    help="CUDA-graph padding of KV tokens read")
    ce.add_argument("--tp", type=positive_int, default=1, help="tensor-parallel ranks of the logs")
    ce.add_argument("--transfer", help="how the device terms follow another model shape, "
                                       "e.g. kv_token=none,attn_pair=attention (kv_bytes, "
                                       "attention, none; default kv_bytes, attention)")
    ce.add_argument("--link", help="link between the ranks (with --tp > 1), e.g. NVLink4")
    ce.add_argument("--description", help="a line saying what the engine is, kept in the spec")
    ce.add_argument("--scale-device", action="store_true",
                    help="also fit a multiplier on the device time (default 1)")
    ce.set_defaults(func=cmd_calibrate_engine)
    ve = sub.add_parser("validate-e2e",
                        help="simulate measured replays with an engine model; compare latencies")
    ve.add_argument("replays", nargs="+", help="replay CSV(s): arrival_s, prompt_tokens, "
                                               "output_tokens, ttft_s, tpot_s, e2e_s")
    ve.add_argument("--engine", required=True, help="engine name (list engines) or TOML path")
    ve.add_argument("--out", help="write per-request measured and simulated latencies here")
    ve.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="override a setting the replay's metadata (or else the engine file) "
                         "gives: num_blocks, block_size, max_batch_tokens, "
                         "max_requests_per_batch, safety_margin, model; repeatable")
    ve.set_defaults(func=cmd_validate_e2e)
    add_import_command(sub)


def cmd_import_profile(args) -> int:
    """Turn a published profile into calibration tables (vidur) or an engine log (splitwise)."""
    from simcluster.cli.checks import each_once, in_file, out_dir, out_file, reading
    other = [f"--{k}" for k in (("model", "hardware", "tp") if args.kind == "vidur"
                                else ("device",)) if getattr(args, k) is not None]
    if other:
        raise InputError(f"does nothing for import-profile {args.kind} (see "
                         "'simcluster import-profile -h')", field=other[0])
    if args.kind == "splitwise" and len(args.files) > 1:
        raise InputError(f"import-profile splitwise reads one perf_model.csv, got "
                         f"{len(args.files)} files", field="files")
    files = [in_file(f) for f in args.files]
    each_once(args.files, files, "files", "profile")      # (its rows would count twice)
    if args.kind == "vidur":
        from simcluster.calibration.importers import import_vidur, write_tables
        from simcluster.calibration.tables import calibration_dir
        if not args.device or not _ENGINE_NAME.fullmatch(args.device) or ".." in args.device:
            raise InputError(f"import-profile vidur needs --device, a plain device name (the "
                             f"tables' folder name), got {args.device!r}", field="--device")
        out = out_dir(args.out) if args.out else calibration_dir() / args.device
        with reading(", ".join(map(str, files))):
            tables = import_vidur(files, args.device)
        for p in write_tables(tables, out):
            print(f"wrote {p}")
        return 0
    from simcluster.engines.importers import splitwise_log
    missing = [f"--{k}" for k in ("model", "hardware", "tp", "out") if not getattr(args, k)]
    if missing:
        raise InputError(f"import-profile splitwise needs {', '.join(missing)}",
                         field=missing[0])
    out = out_file(args.out)
    with reading(files[0]):
        n = splitwise_log(files[0], args.model, args.hardware, args.tp, out)
    print(f"wrote {n} iterations to {out}")
    return 0


def add_import_command(sub) -> None:
    ip = sub.add_parser("import-profile",
                        help="published profiles -> calibration tables or an engine log")
    ip.add_argument("kind", choices=["vidur", "splitwise"],
                    help="vidur: data/profiling/compute/<device>/<model>/{mlp,attention}.csv "
                         "-> kernel tables; splitwise: SplitwiseSim's perf_model.csv -> a "
                         "per-iteration engine log for calibrate-engine")
    ip.add_argument("files", nargs="+", help="the profile CSV(s)")
    ip.add_argument("--device", help="vidur: the device the tables are for (its folder name)")
    ip.add_argument("--out", help="vidur: folder (default hwspecs/calibration/DEVICE); "
                                  "splitwise: the log CSV to write")
    ip.add_argument("--model", help="splitwise: model column value, e.g. llama2-70b")
    ip.add_argument("--hardware", help="splitwise: hardware column value, e.g. a100-80gb")
    ip.add_argument("--tp", type=positive_int, help="splitwise: tensor_parallel value")
    ip.set_defaults(func=cmd_import_profile)
