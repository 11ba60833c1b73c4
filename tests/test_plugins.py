"""Plugins (issue 11): a layer in a file outside the repository is listed, checked, trained and
profiled via --plugin, via DLBENCH_PLUGINS and via an installed entry point; bad plugins are one line."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from dlbench import plugins, registry

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "plugin"
REPO = Path(__file__).resolve().parents[1]

PEEKY = textwrap.dedent('''
    import jax.numpy as jnp
    import dlbench

    @dlbench.register_model("peeky", description="looks one step ahead")
    class Peeky(dlbench.AbstractSequenceLayer):
        def __init__(self, hidden_dim, state_dim, *, rngs, dtype=jnp.float32, param_dtype=jnp.float32, scan="auto"):
            super().__init__(hidden_dim, state_dim, dtype=dtype, param_dtype=param_dtype, scan=scan)

        def _forward(self, u):
            ahead = jnp.concatenate([u[1:], jnp.zeros_like(u[:1])])
            return (u + 0.5 * ahead).astype(self.dtype)
''')


def cli(*args, env_extra=None, cwd=None, timeout=600):
    env = {k: v for k, v in os.environ.items() if k != "DLBENCH_PLUGINS"}
    env.update(env_extra or {})
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return subprocess.run(
        [sys.executable, "-c", "import sys; from dlbench.cli import main; sys.exit(main(sys.argv[1:]))", *args],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd,
    )


@pytest.fixture
def plugin_file(tmp_path_factory):
    """The example layer copied to a directory outside the repository."""
    where = tmp_path_factory.mktemp("outside") / "my_ema.py"
    shutil.copy(EXAMPLE / "dlbench_ema" / "__init__.py", where)
    return where


@pytest.fixture
def clean_registry(monkeypatch):
    """Load plugins in this process without leaking them into other tests."""
    monkeypatch.delenv("DLBENCH_PLUGINS", raising=False)
    import dlbench.layers  # noqa: F401

    saved_models, saved_loaded = dict(registry._MODELS), dict(plugins._LOADED)
    yield
    registry._MODELS.clear()
    registry._MODELS.update(saved_models)
    plugins._LOADED.clear()
    plugins._LOADED.update(saved_loaded)


def test_import_dlbench_stays_light():
    code = "import sys, dlbench; assert 'jax' not in sys.modules; dlbench.register_model; assert 'jax' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_load_plugins_registers_records_and_exports(clean_registry, plugin_file, monkeypatch):
    loaded = plugins.load_plugins([str(plugin_file)])
    assert loaded[0].models == ("ema",) and "ema" in registry.model_names()
    record = plugins.loaded_plugins()[-1]
    import hashlib

    assert record["kind"] == "file" and record["sha256"] == hashlib.sha256(plugin_file.read_bytes()).hexdigest()
    assert os.environ["DLBENCH_PLUGINS"] == str(plugin_file)
    assert plugins.load_plugins([str(plugin_file)])[0] is loaded[0]  # idempotent: no duplicate-name error


def test_bad_plugins_are_one_line(clean_registry, tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(plugins.PluginError, match=r"plugin '.*broken.py' failed to import: RuntimeError: boom"):
        plugins.load_plugins([str(broken)])
    dup = tmp_path / "dup.py"
    dup.write_text(PEEKY.replace('"peeky"', '"dlinoss"'))
    with pytest.raises(plugins.PluginError, match=r"dup.py'.*'dlinoss' is already registered to dlbench.layers.oscillatory.DLinOSS"):
        plugins.load_plugins([str(dup)])
    with pytest.raises(plugins.PluginError, match="no module of that name"):
        plugins.load_plugins(["no_such_plugin_module_xyz"])
    with pytest.raises(plugins.PluginError, match="no such file"):
        plugins.load_plugins([str(tmp_path / "missing.py")])


def test_cli_models_check_and_failures(plugin_file, tmp_path):
    proc = cli("models", "--plugin", str(plugin_file), "--hidden", "8", "--state", "4")
    assert proc.returncode == 0 and "ema" in proc.stdout, proc.stderr
    proc = cli("models", env_extra={"DLBENCH_PLUGINS": str(plugin_file)})
    assert proc.returncode == 0 and "ema" in proc.stdout, proc.stderr
    proc = cli("check", "ema", "--plugin", str(plugin_file))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("PASS") == 9
    peeky = tmp_path / "peeky.py"
    peeky.write_text(PEEKY)
    proc = cli("check", "peeky", "--plugin", str(peeky))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr + proc.stdout
    assert proc.stderr.strip().splitlines() == ["dlbench: check failed: peeky: causality"]
    broken = tmp_path / "broken.py"
    broken.write_text("import nonexistent_dependency_xyz\n")
    proc = cli("models", "--plugin", str(broken))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert "broken.py' failed to import: ModuleNotFoundError" in proc.stderr


def test_check_builtins_pass(capsys):
    from dlbench.check import check_models, failures

    results = check_models(["lru", "attention"])
    assert failures(results) == []
    assert [r.status for r in results if r.prop == "scan backends"] == ["PASS", "n/a"]  # attention: no sequential


@pytest.mark.parametrize("via", ["option", "env"])
def test_run_trains_a_plugin_layer(plugin_file, tmp_path, via):
    out = tmp_path / "run"
    args = ["run", "smoke", "--model", "ema", "--seeds", "0", "--out", str(out),
            "--set", "train.steps=2", "--set", "train.eval_every=1", "--set", "model.hidden_dim=4",
            "--set", "model.state_dim=2", "--set", "model.num_blocks=1", "--set", "train.batch_size=4"]
    # smoke includes "all": every registered model, so a loaded plugin's too
    extra = {"DLBENCH_PLUGINS": str(plugin_file)} if via == "env" else None
    if via == "option":
        args += ["--plugin", str(plugin_file)]
    proc = cli(*args, env_extra=extra)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = pd.read_csv(out / "rows.csv", keep_default_na=False)
    assert set(rows["model"]) == {"ema"} and (rows["status"] == "ok").any()


def test_a_suite_file_names_its_plugins_and_the_manifest_records_them(plugin_file, tmp_path):
    import hashlib
    import json

    suite = plugin_file.parent / "mine.toml"  # the plugin is named relative to the suite file
    suite.write_text(textwrap.dedent(f"""
        plugins = ["{plugin_file.name}"]
        include = ["ema"]
        [model]
        hidden_dim = 4
        state_dim = 2
        num_blocks = 1
        [train]
        steps = 2
        eval_every = 1
        batch_size = 4
        [tasks.decay]
        num_sequences = 8
        seq_len = 16
    """))
    out = tmp_path / "run"
    proc = cli("run", str(suite), "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    recorded = json.loads((out / "manifest.json").read_text())["plugins"]
    mine = [p for p in recorded if p["path"] == str(plugin_file)]
    assert len(mine) == 1 and mine[0]["sha256"] == hashlib.sha256(plugin_file.read_bytes()).hexdigest()
    assert "ema" in mine[0]["models"]


def test_a_suite_with_a_bad_plugins_list_is_one_line(tmp_path, error_line):
    bad = tmp_path / "bad.toml"
    bad.write_text('plugins = "not a list"\n[tasks.decay]\n')
    assert "plugins must be a list" in error_line(["run", str(bad), "--dry-run"])


def test_profile_scan_isolated_cell_sees_the_plugin(plugin_file, tmp_path):
    out = tmp_path / "scan"
    proc = cli("profile", "scan", "--plugin", str(plugin_file), "--models", "ema", "--backends", "auto,associative",
               "--lengths", "64", "--hidden", "4", "--state", "2", "--mode", "fwd", "--repeats", "1", "--min-time", "0",
               "--rounds", "1", "--max-rounds", "1", "--no-bandwidth",
               "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = pd.read_csv(out / "rows.csv", keep_default_na=False)
    cells = rows[rows["model"] == "ema"]
    assert set(cells["backend"]) == {"auto", "associative"} and set(cells["status"]) == {"ok"}
    assert (cells["metric"] == "wall_s").any()


def test_entry_point_of_an_installed_dist_info(tmp_path):
    """A real .dist-info with entry_points.txt on sys.path (what pip install writes)."""
    site = tmp_path / "site"
    shutil.copytree(EXAMPLE / "dlbench_ema", site / "dlbench_ema")
    info = site / "dlbench_ema-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: dlbench-ema\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[dlbench.models]\nema = dlbench_ema\n")
    (info / "top_level.txt").write_text("dlbench_ema\n")
    (info / "RECORD").write_text("")
    code = textwrap.dedent("""
        import json
        from dlbench import plugins, registry
        plugins.load_models()
        print(json.dumps({"names": registry.model_names(), "loaded": plugins.loaded_plugins()}))
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(site)])}
    env.pop("DLBENCH_PLUGINS", None)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "ema" in report["names"]
    entry = [p for p in report["loaded"] if p["kind"] == "entry-point"]
    assert entry and entry[0]["version"] == "dlbench-ema 0.1.0" and entry[0]["models"] == ["ema"]
    proc = subprocess.run([sys.executable, "-c", "import sys; from dlbench.cli import main; sys.exit(main(sys.argv[1:]))",
                           "models", "--hidden", "8", "--state", "4"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0 and "ema" in proc.stdout, proc.stderr


def test_layer_options_reach_the_base_through_common_keywords():
    """A plugin that spells the shared keywords out and a built-in that passes them on as ``**common`` are
    checked alike: a layer option is valid exactly where a constructor in the chain takes it."""
    from types import MappingProxyType

    import jax.numpy as jnp

    import dlbench
    import dlbench.layers  # noqa: F401
    from dlbench.errors import UnknownChoiceError

    class Explicit(dlbench.AbstractSequenceLayer):
        def __init__(self, hidden_dim, state_dim, *, rngs, dtype=jnp.float32, param_dtype=jnp.float32, scan="auto", width=1):
            super().__init__(hidden_dim, state_dim, dtype=dtype, param_dtype=param_dtype, scan=scan)

        def _forward(self, u):
            return u

    explicit = registry.ModelSpec("explicit", Explicit, MappingProxyType({}), "")
    explicit.check_options({"width": 2}, "auto")
    with pytest.raises(UnknownChoiceError, match=r"layer option for explicit 'chunk_size'; valid choices: width$"):
        explicit.check_options({"chunk_size": 8}, "auto")
    mamba = registry.get_model("mamba")
    mamba.check_options({"chunk_size": 8, "dt_rank": 3, "d_conv": 2}, "sequential")
    with pytest.raises(UnknownChoiceError, match=r"valid choices: chunk_size, dt_rank, dt_min, dt_max, dt_floor, d_conv, expand$"):
        mamba.check_options({"rngs": 0}, "auto")
