"""SplitwiseSim's per-iteration perf model -> a per-iteration engine log.

SplitwiseSim (github.com/Mutinifni/splitwise-sim, ``data/perf_model.csv``; a copy with its
provenance in ``../shared/calibration/``) profiled whole iterations of its engine on DGX-A100
and DGX-H100: columns ``model, hardware, prompt_size, batch_size, token_size,
prompt_time`` (ms: one prefill iteration of ``batch_size`` prompts of ``prompt_size`` tokens),
``token_time`` (ms: the mean decode iteration while ``batch_size`` sequences generate
``token_size`` tokens after their prompts) and ``tensor_parallel``. Those are iterations, not
operators, so they become an engine log in the bring-your-own format
(``hwspecs/engines/README.md``): one prefill row and one decode row per profiled configuration
(repeated profiles reduced to their median; a decode row's context is the mean over the
generation, ``prompt_size + token_size / 2`` per sequence). ``simcluster calibrate-engine LOG
--tp N --link NVLink3 ...`` fits an engine model to it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from simcluster.errors import InputError, value_text
from simcluster.workload._columns import Rows, numbers, unique_file_header

COLUMNS = ("model", "hardware", "prompt_size", "batch_size", "token_size", "prompt_time",
           "token_time", "tensor_parallel")


def splitwise_rows(path, model: str, hardware: str, tp: int) -> pd.DataFrame:
    """The per-iteration rows of one (model, hardware, TP) of a SplitwiseSim perf model."""
    try:
        unique_file_header(path)
        df = pd.read_csv(path)
    except FileNotFoundError:
        raise InputError("no such SplitwiseSim perf model", file=str(path)) from None
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"missing columns {missing}; SplitwiseSim's perf_model.csv has "
                         f"{list(COLUMNS)}", file=str(path))
    sel = df[(df.model == model) & (df.hardware == hardware) & (df.tensor_parallel == tp)]
    if not len(sel):
        known = sorted({(m, h, int(t)) for m, h, t in
                        df[["model", "hardware", "tensor_parallel"]].itertuples(index=False)})
        raise InputError(f"no rows for model={model!r}, hardware={hardware!r}, "
                         f"tensor_parallel={tp}; present: {known}", file=str(path))
    rows = Rows(str(path), sel.index.to_numpy() + 2)     # (a header, then one line a row)
    sel = sel.copy()
    for c in ("prompt_size", "batch_size", "token_size"):
        sel[c] = numbers(sel[c], rows, c, integer=True, minimum=1,
                         expected="a whole number >= 1")
    for c in ("prompt_time", "token_time"):
        vals = pd.to_numeric(sel[c], errors="coerce")
        bad = ~(vals > 0)
        if bad.any():
            i = int(bad.to_numpy().nonzero()[0][0])
            raise rows.error(i, c, f"expected a time > 0 ms, found {value_text(sel[c].iloc[i])}")
        sel[c] = vals
    keys = ["prompt_size", "batch_size", "token_size"]
    med = sel.groupby(keys, as_index=False)[["prompt_time", "token_time"]].median()
    rows = []
    for r in med.itertuples(index=False):
        b, p, t = int(r.batch_size), int(r.prompt_size), int(r.token_size)
        rows.append({"phase": f"prompt-b{b}-p{p}-t{t}", "iteration_s": r.prompt_time / 1e3,
                     "prefill_seqs": b, "prefill_tokens": b * p, "prefill_context_tokens": 0,
                     "decode_seqs": 0, "decode_context_tokens": 0, "samples": b})
        rows.append({"phase": f"token-b{b}-p{p}-t{t}", "iteration_s": r.token_time / 1e3,
                     "prefill_seqs": 0, "prefill_tokens": 0, "prefill_context_tokens": 0,
                     "decode_seqs": b, "decode_context_tokens": b * (p + t // 2 + 1),
                     "samples": b})
    return pd.DataFrame(rows)


def splitwise_log(path, model: str, hardware: str, tp: int, out) -> int:
    """Write the engine log of one configuration to ``out``; returns its row count."""
    df = splitwise_rows(path, model, hardware, tp)
    meta = {"engine": "splitwise-sim perf model", "source": f"{Path(path).name} "
            "(github.com/Mutinifni/splitwise-sim data/perf_model.csv)",
            "served_model": model, "hardware": hardware, "tp": tp,
            "note": "prompt rows: one prefill iteration of the batch; token rows: the mean "
                    "decode iteration over the generation (context at its middle)"}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    head = "".join(f"# {k}: {v}\n" for k, v in meta.items())
    out.write_text(head + df.to_csv(index=False))
    return len(df)
