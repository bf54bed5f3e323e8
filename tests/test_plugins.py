"""Plugins: a TOML names user modules whose registered policies resolve by name; registering a
name again replaces it with a warning (a re-run notebook cell), never a built-in."""

import warnings

import pytest

from _tiny import TINY, write_tiny
from simcluster.cli import main
from simcluster.errors import InputError
from simcluster.experiment import load_experiment
from simcluster.policies import ROUTERS

PLUGIN = '''
from simcluster.policies import ROUTERS


@ROUTERS.register("{name}")
class FirstInstance:
    """Every request to the first candidate."""

    def bind(self, cluster):
        return self

    def route(self, req, candidates, now):
        return candidates[0]
'''


@pytest.fixture
def plugin_exp(tmp_path):
    (tmp_path / "myrouting.py").write_text(PLUGIN.format(name="test_first_instance"))
    text = 'plugins = ["myrouting"]\n' + TINY.replace('"least_outstanding_tokens"',
                                                      '"test_first_instance"')
    yield write_tiny(tmp_path, text)
    ROUTERS.pop("test_first_instance", None)


def test_a_plugin_policy_resolves_by_name(plugin_exp, capsys):
    res = load_experiment(plugin_exp).run()
    assert set(res.requests.instance) == {0}            # everything went to the first
    assert main(["run", str(plugin_exp), "--quiet"]) == 0
    assert "router test_first_instance" in capsys.readouterr().out


def test_a_plugin_by_path_and_through_set(tmp_path, monkeypatch):
    (tmp_path / "pol").mkdir()
    (tmp_path / "pol" / "r.py").write_text(PLUGIN.format(name="test_first_by_path"))
    (tmp_path / "exp").mkdir()
    exp = write_tiny(tmp_path / "exp")
    monkeypatch.chdir(tmp_path)     # (an override's path: from the current folder)
    try:
        e = load_experiment(exp, {"plugins": ["pol/r.py"], "router.policy": "test_first_by_path"})
        assert set(e.run().requests.instance) == {0}
    finally:
        ROUTERS.pop("test_first_by_path", None)


@pytest.mark.parametrize("plugins, msg", [
    ('["no_such_module_xyz"]', "cannot load plugin 'no_such_module_xyz'"),
    ('["missing.py"]', "no such file"),
    ('"myrouting"', "expected an array"),
])
def test_bad_plugins_name_the_key(tmp_path, plugins, msg):
    exp = write_tiny(tmp_path, f"plugins = {plugins}\n" + TINY)
    with pytest.raises(InputError) as err:
        load_experiment(exp)
    assert "field 'plugins'" in str(err.value) and msg in str(err.value)


def test_registering_again_replaces_with_a_warning():
    class A:
        pass

    class B:
        pass

    try:
        ROUTERS.register("test_twice")(A)
        with pytest.warns(RuntimeWarning, match="registered again"):
            ROUTERS.register("test_twice")(B)
        assert ROUTERS["test_twice"] is B
    finally:
        ROUTERS.pop("test_twice", None)


def test_a_built_in_is_never_shadowed():
    class Impostor:
        pass

    with pytest.raises(ValueError, match="built in"):
        ROUTERS.register("round_robin")(Impostor)
    original = ROUTERS["round_robin"]
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        ROUTERS.register("round_robin")(original)       # reloading the module itself is fine
    assert ROUTERS["round_robin"] is original


def test_built_in_policies_are_imported_when_a_registry_first_needs_them():
    """Only batching's and routing's policies are imported with ``simcluster.policies``; the
    other built-in modules are imported before a registry answers for a name it lacks, is
    listed, or takes a policy defined elsewhere (whose name a built-in still may not shadow);
    a thread asking while another imports them waits for it."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    code = '''
import sys
from simcluster.policies import BATCHERS, ROUTERS, registry
later = [m for m in registry.BUILTIN_MODULES]
assert later and not any(m in sys.modules for m in later), later
assert "vllm" in BATCHERS and ROUTERS.get("round_robin") is not None
assert not any(m in sys.modules for m in later)             # held names: nothing imported
assert "bucketed" in BATCHERS and all(m in sys.modules for m in later)
'''
    shadow = '''
from simcluster.policies import ROUTERS
class Impostor:
    pass
Impostor.__module__ = "my_plugin"
try:
    ROUTERS.register("length_buckets")(Impostor)     # (bucketed's, not imported yet)
except ValueError as err:
    assert "built in" in str(err), err
else:
    raise AssertionError("a built-in not yet imported was shadowed")
'''
    listing = '''
from simcluster.policies import CONTROLLERS, ROUTERS
assert "mmc" in list(CONTROLLERS) and len(ROUTERS) >= 7 and "numa_minibatch" in dict(ROUTERS)
'''
    threads = '''
import importlib, threading
from simcluster.policies import BATCHERS, registry
real, gate, inside = importlib.import_module, threading.Event(), threading.Event()
def held(name, *args):                    # the first built-in module's import waits
    if name == "simcluster.policies.bucketed":
        inside.set()
        gate.wait(10)
    return real(name, *args)
importlib.import_module = held
seen = {}
def ask(who):
    seen[who] = "bucketed" in BATCHERS
a = threading.Thread(target=ask, args=("a",))
a.start()
assert inside.wait(10)
b = threading.Thread(target=ask, args=("b",))    # asks while a imports: waits for it
b.start()
b.join(0.5)
gate.set()
a.join()
b.join()
assert seen == {"a": True, "b": True}, seen
'''
    root = Path(__file__).resolve().parents[1]
    for text in (code, shadow, listing, threads):
        out = subprocess.run([sys.executable, "-c", text], capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(root)})
        assert out.returncode == 0, out.stderr
