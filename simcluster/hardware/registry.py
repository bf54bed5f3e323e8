"""The spec registry: device, link and node specs found by name in ``hwspecs/``.

Specs are TOML files under ``hwspecs/{devices,links,nodes}/`` (format: hwspecs/README.md),
found by name or alias ignoring case, ``-``, ``_`` and spaces. Loading checks fields, types and
units, naming file and field of any bad value; specs are cached by path and modification time.

``SIMCLUSTER_HWSPECS`` *adds* spec folders (several joined by ``os.pathsep``) in front of the
bundled one: their devices, links, nodes, calibration tables and engines are found first (a
file of the same name shadows the bundled one), and everything bundled stays available.
"""

from __future__ import annotations

import functools
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from simcluster.errors import InputError, SettingError, path_like, unknown_name
from simcluster.hardware.specs import (_RANGES, DTYPES, DeviceSpec, LinkSpec, NodeSpec,
                                       _OPTIONAL_NUMBERS, _at, _did_you_mean)
from simcluster.paths import data_dir

ENV_VAR = "SIMCLUSTER_HWSPECS"


def hwspecs_dirs() -> list[Path]:
    """The spec folders searched, in order: each folder of ``$SIMCLUSTER_HWSPECS``, then the
    bundled ``hwspecs/``. A folder named there that does not exist is an InputError."""
    out = []
    for part in os.environ.get(ENV_VAR, "").split(os.pathsep):
        if not part.strip():
            continue
        path = Path(part).expanduser().resolve()
        if not path.is_dir():
            raise SettingError(f"the environment variable {ENV_VAR} names {str(path)!r}, "
                               "which is not a folder; expected folders holding devices/, "
                               "links/, nodes/ (any of them), joined by "
                               f"{os.pathsep!r}")
        out.append(path)
    bundled = data_dir("hwspecs")
    return out + [bundled] if bundled not in out else out


def hwspecs_dir() -> Path:
    """The first spec folder: the first of ``$SIMCLUSTER_HWSPECS`` if set, else the bundled
    ``hwspecs/`` (where a user's own specs, tables and engines are written)."""
    return hwspecs_dirs()[0]


def hwspecs_subdirs(folder: str) -> list[Path]:
    """``folder`` (``devices``, ``calibration``, ``engines``, ...) of every spec folder that
    has one, in search order."""
    return [d / folder for d in hwspecs_dirs() if (d / folder).is_dir()]


def _key(name: str) -> str:
    return re.sub(r"[\s_\-]", "", name).lower()




@functools.lru_cache(maxsize=None)
def _read_toml(path: str, mtime_ns: int) -> dict[str, Any]:
    return read_toml_file(path)


def read_toml_file(path: str | os.PathLike, what: str = "") -> dict[str, Any]:
    """A TOML file as a dict: UTF-8 (a byte-order mark is skipped); InputError naming the file
    (and line) when it cannot be read or parsed. ``what`` names the kind of file in the
    message ("no such sweep file")."""
    path = str(path)
    kind = f"{what} file" if what else "file"
    try:
        with open(path, "rb") as fh:
            text = fh.read().decode("utf-8-sig")
        return tomllib.loads(text)
    except FileNotFoundError:
        raise InputError(f"no such {kind}", file=path) from None
    except IsADirectoryError:
        raise InputError(f"is a folder; expected a TOML {kind}", file=path) from None
    except UnicodeDecodeError as err:
        raise InputError(f"not UTF-8 text ({err.reason} at byte {err.start})", file=path) from None
    except tomllib.TOMLDecodeError as err:
        m = re.search(r"line (\d+)", str(err))
        raise InputError(f"not valid TOML: {err}", file=path,
                         line=int(m.group(1)) if m else None) from None


def _registry(folder: str) -> list[tuple[Path, str, list[str]]]:
    """(path, name, aliases) of every spec file in one registry folder, sorted by name."""
    out, seen = [], set()
    for path in (p for d in hwspecs_subdirs(folder) for p in sorted(d.glob("*.toml"))):
        raw = _read_toml(str(path), path.stat().st_mtime_ns)   # a broken file is named
        name = str(raw.get("name", path.stem))
        if {_key(path.stem), _key(name)} & seen:   # shadowed by a file of an earlier folder
            continue
        seen |= {_key(path.stem), _key(name)}
        aliases = raw.get("aliases", [])
        out.append((path, name, [str(a) for a in aliases] if isinstance(aliases, list) else []))
    return sorted(out, key=lambda entry: entry[1].lower())


def _find(folder: str, name_or_path: str | os.PathLike, what: str) -> Path:
    """The spec file for a registry name or alias, or the given path to a .toml file."""
    text = os.fspath(name_or_path)
    if isinstance(name_or_path, os.PathLike) or text.endswith(".toml") or os.sep in text:
        path = Path(text).expanduser()
        if not path.is_file():
            raise InputError(f"no {what} spec file here" + (" (a folder)" if path.is_dir()
                                                             else ""), file=text)
        return path.resolve()
    entries = _registry(folder)
    for path, name, aliases in entries:
        if _key(text) in {_key(path.stem), _key(name), *map(_key, aliases)}:
            return path.resolve()
    folders = ", ".join(str(d / folder) for d in hwspecs_dirs())
    raise unknown_name(what, text, [name for _, name, _ in entries],
                       hint=f" (in {folders}; {ENV_VAR} adds a folder of your own)")


def _check_keys(raw: Mapping[str, Any], required: tuple[str, ...], allowed: set[str],
                file: Path) -> None:
    for key in raw:
        if key not in allowed:
            raise InputError(f"unknown field{_did_you_mean(key, allowed)}; allowed: "
                             f"{', '.join(sorted(allowed))}", file=file, field=key)
    for key in required:
        if key not in raw:
            unit = f" (in {_RANGES[key][0]})" if key in _RANGES else ""
            raise InputError(f"missing required field{unit}", file=file, field=key)
    if not isinstance(raw["name"], str) or raw["name"].lower() != file.stem.lower():
        raise InputError(f"expected the file stem {file.stem!r} (any case), got "
                         f"{raw['name']!r}", file=file, field="name")


_DEVICE_REQUIRED = ("name", "kind", "arch_family", "source", "mem_bytes", "mem_bw_bytes_per_s",
                    "peak_flops_fp32", "compute_units", "clock_hz", "tdp_w",
                    "price_usd_per_hour")
_DEVICE_ALLOWED = {*_DEVICE_REQUIRED, *_OPTIONAL_NUMBERS, "host_link", "aliases",
                   *(f"peak_flops_{d}" for d in DTYPES)}
_LINK_REQUIRED = ("name", "source", "bw_bytes_per_s", "latency_s")
_NODE_LINKS = ("intra_link", "inter_node_link", "host_link", "socket_link")


def _build_device_or_link(raw: dict[str, Any], file: Path, folder: str) -> Any:
    if folder == "links":
        _check_keys(raw, _LINK_REQUIRED, {*_LINK_REQUIRED, "kind"}, file)
        make: Any = LinkSpec
    else:
        _check_keys(raw, _DEVICE_REQUIRED, _DEVICE_ALLOWED, file)
        aliases = raw.get("aliases", [])
        if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
            raise InputError(f"expected a list of names, got {aliases!r}", file=file,
                             field="aliases")
        if isinstance(raw.get("host_link"), str):
            try:
                _find("links", raw["host_link"], "link")
            except InputError as err:
                raise _at(err, file, "host_link") from None
        flops = {k[len("peak_flops_"):]: raw[k] for k in raw if k.startswith("peak_flops_")}
        raw = {k: v for k, v in raw.items() if not k.startswith("peak_flops_")}
        make = functools.partial(DeviceSpec, peak_flops=flops)
    try:
        return make(**raw)
    except InputError as err:
        raise _at(err, file) from None


def _pairs(raw: dict[str, Any], key: str, file: Path) -> tuple[tuple[str, int], ...]:
    """A node's [[devices]] or [[sockets]] entries, each naming an existing device spec."""
    entries, out = raw.get(key, []), []
    if not isinstance(entries, list):
        raise InputError(f"expected an array of tables [[{key}]]", file=file, field=key)
    for where, entry in ((f"{key}[{i}]", e) for i, e in enumerate(entries)):
        if not isinstance(entry, dict) or set(entry) - {"spec", "count"} or "spec" not in entry:
            raise InputError("expected a table with 'spec' (a device name) and 'count' (>= 1)",
                             file=file, field=where)
        count = entry.get("count", 1)
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise InputError(f"expected a whole number >= 1, got {count!r}", file=file,
                             field=f"{where}.count")
        try:
            spec = _load_spec("devices", str(entry["spec"]), "device")
        except InputError as err:
            raise _at(err, file, f"{where}.spec") from None
        if (spec.kind == "cpu") != (key == "sockets"):
            raise InputError(f"{spec.name} is a {spec.kind} device; [[devices]] holds "
                             "accelerators, [[sockets]] CPU sockets", file=file,
                             field=f"{where}.spec")
        out.append((str(entry["spec"]), count))
    return tuple(out)


def _build_node(raw: dict[str, Any], file: Path, folder: str = "nodes") -> NodeSpec:
    _check_keys(raw, ("name", "source"), {"name", "source", "devices", "sockets", *_NODE_LINKS},
                file)
    devices, sockets = _pairs(raw, "devices", file), _pairs(raw, "sockets", file)
    if not devices and not sockets:
        raise InputError("expected at least one [[devices]] or [[sockets]] entry", file=file,
                         field="devices")
    for key in (k for k in _NODE_LINKS if k in raw):
        try:
            _find("links", str(raw[key]), "link")
        except InputError as err:
            raise _at(err, file, key) from None
    return NodeSpec(name=raw["name"], devices=devices, sockets=sockets, source=str(raw["source"]),
                    **{key: raw.get(key) for key in _NODE_LINKS})


@functools.lru_cache(maxsize=None)
def _load(folder: str, path: str, mtime_ns: int) -> Any:
    build = _build_node if folder == "nodes" else _build_device_or_link
    return build(_read_toml(path, mtime_ns), Path(path), folder)


def _load_spec(folder: str, name_or_path: str | os.PathLike, what: str) -> Any:
    path = _find(folder, path_like(name_or_path, what), what)
    return _load(folder, str(path), path.stat().st_mtime_ns)


def own_spec_files(folder: str, names) -> dict[str, Path]:
    """Of the registry ``names`` (specs in ``folder``: devices, links), those a folder of
    ``$SIMCLUSTER_HWSPECS`` provides, with their files; a name the bundled specs also hold
    is read from there instead (what a run's provenance should say)."""
    if not os.environ.get(ENV_VAR, "").strip():
        return {}
    from simcluster.paths import data_dir
    bundled = (data_dir("hwspecs") / folder).resolve()
    out = {}
    for name in dict.fromkeys(names):
        try:
            path = _find(folder, name, folder)
        except InputError:
            continue
        if path.parent != bundled:
            out[name] = path
    return out


def load_device(name_or_path: str | os.PathLike) -> DeviceSpec:
    """A device spec by registry name or alias (case-insensitive) or by a .toml path."""
    return _load_spec("devices", name_or_path, "device")


def load_link(name_or_path: str | os.PathLike) -> LinkSpec:
    """A link spec by registry name (case-insensitive) or by a .toml path."""
    return _load_spec("links", name_or_path, "link")


def load_node(name_or_path: str | os.PathLike) -> NodeSpec:
    """A node template by name or path; the device and link specs it names must exist."""
    return _load_spec("nodes", name_or_path, "node")


def default_tp_link(*devices: DeviceSpec) -> str | None:
    """The link a tensor-parallel group of ``devices`` uses when none is named: the
    ``intra_link`` (GPUs) or ``socket_link`` (CPU sockets) of the node templates that hold
    every one of them, when they agree on one; None when no node holds them all or the nodes
    disagree."""
    wanted = [{_key(d.name), *map(_key, d.aliases)} for d in devices]
    links = set()
    for path, _, _ in _registry("nodes"):
        raw = _read_toml(str(path), path.stat().st_mtime_ns)
        for key, link in (("devices", "intra_link"), ("sockets", "socket_link")):
            entries = raw.get(key, [])
            held = {_key(str(e.get("spec", ""))) for e in entries if isinstance(e, dict)} \
                if isinstance(entries, list) else set()
            if all(names & held for names in wanted) and raw.get(link):
                links.add(str(raw[link]))
    return links.pop() if len(links) == 1 else None


def list_devices() -> list[str]:
    """Names of all device specs in the registry."""
    return [name for _, name, _ in _registry("devices")]


def list_links() -> list[str]:
    """Names of all link specs in the registry."""
    return [name for _, name, _ in _registry("links")]


def list_nodes() -> list[str]:
    """Names of all node templates in the registry."""
    return [name for _, name, _ in _registry("nodes")]
