"""The public traces shipped in the repository's ``traces/`` folder, by short name.

The folder is ``<repository root>/traces`` (next to the ``simcluster`` package), or the
folder named by the environment variable ``SIMCLUSTER_TRACES`` when it is set. Licences and
sources of the files are in ``traces/PROVENANCE.md``.
"""

from __future__ import annotations

import os
from pathlib import Path

from simcluster.errors import InputError, unknown_name
from simcluster.paths import data_dir

#: Bundled trace name -> file name in the traces folder.
BUNDLED: dict[str, str] = {
    "azure-code": "AzureLLMInferenceTrace_code.csv",
    "azure-conv": "AzureLLMInferenceTrace_conv.csv",
    "mooncake-conv": "mooncake_conversation_trace.jsonl",
}

ENV_VAR = "SIMCLUSTER_TRACES"


def traces_dir() -> Path:
    """The folder holding the bundled traces (``$SIMCLUSTER_TRACES`` overrides the default)."""
    override = os.environ.get(ENV_VAR)
    if override:
        return Path(override)
    return data_dir("traces")


def bundled_traces() -> dict[str, Path]:
    """Every bundled trace name and the path of its file, in name order."""
    folder = traces_dir()
    return {name: folder / BUNDLED[name] for name in sorted(BUNDLED)}


def bundled_trace_path(name: str) -> Path:
    """The file of the bundled trace ``name``; fails listing the known names.

    Raises InputError, naming the folder and ``$SIMCLUSTER_TRACES``, when the name is known
    but its file is absent (e.g. ``$SIMCLUSTER_TRACES`` names another folder).
    """
    if name not in BUNDLED:
        raise unknown_name("bundled trace", name, BUNDLED)
    path = traces_dir() / BUNDLED[name]
    if not path.is_file():
        raise InputError(f"bundled trace {name!r} is not at {path}; set {ENV_VAR} to the "
                         "folder holding the simcluster traces", file=str(path))
    return path
