"""The malformed-input fuzz of benchmarks/fuzz_inputs.py, as a test: every malformed input
(traces in every format, experiment TOMLs, device/link/node specs, HF configs, command lines)
is refused with a named error — no traceback, no silent accept, no vague message — and every
valid control is accepted."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "fuzz_inputs.py"
_spec = importlib.util.spec_from_file_location("fuzz_inputs", PATH)
fuzz = sys.modules.setdefault("fuzz_inputs", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(fuzz)


@pytest.mark.parametrize("kind", list(fuzz.KINDS))
def test_malformed_inputs_get_named_errors(kind):
    results = [fuzz.run_case(c, timeout_s=60) for c in fuzz.KINDS[kind]()]
    bad = [r for r in results if (r.outcome != "named") != r.case.valid or
           (r.case.valid and r.outcome != "silent")]
    assert len(results) >= 25
    assert not bad, "\n".join(f"[{r.outcome}] {r.case.name}: {r.detail[-300:]}" for r in bad)
