"""Plugins: sequence layers from outside dlbench, registered like the built-ins.

A plugin is an importable module or a ``.py`` file whose import registers one or more models with
:func:`dlbench.register_model`. Three ways to load plugins, all equivalent:

- ``--plugin MODULE_OR_FILE`` (repeatable) on every command that takes model names;
- the environment variable ``DLBENCH_PLUGINS``: comma-separated, same forms;
- installed packages that declare an entry point in the group ``dlbench.models`` (its value is the
  module to import, or ``module:attribute``).

:func:`load_plugins` writes every module or file it loaded back into ``os.environ["DLBENCH_PLUGINS"]``
(files as absolute paths), so child processes (isolated profile cells, the processes of a
multi-process job started from here) inherit them; :func:`load_models` loads the built-ins, the
entry points and ``DLBENCH_PLUGINS``, and is what every process that resolves model names calls.
:func:`loaded_plugins` lists what was loaded with its file's sha256 or its package's version (for the
run manifest).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from dlbench import registry
from dlbench.errors import DlbenchError

ENV_VAR = "DLBENCH_PLUGINS"
ENTRY_POINT_GROUP = "dlbench.models"


class PluginError(DlbenchError):
    """A plugin that cannot be found or imported, or that registers a name twice."""


@dataclasses.dataclass(frozen=True)
class LoadedPlugin:
    """What one plugin was and what it registered (a row of the run manifest)."""

    spec: str  # as given: a module name, a file path, or "entry-point:NAME"
    kind: str  # "module", "file" or "entry-point"
    path: str  # the file that was imported ("" for a namespace package)
    sha256: str  # of that file ("" when there is none)
    version: str  # of the distribution that provides it ("" for a loose file or module)
    models: tuple[str, ...]  # model names it registered

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "models": list(self.models)}


_LOADED: dict[str, LoadedPlugin] = {}  # keyed by the normalised spec
_DEFAULTS_LOADED = False


def _is_file_spec(spec: str) -> bool:
    return spec.endswith(".py") or os.sep in spec or (os.altsep is not None and os.altsep in spec)


def _normalise(spec: str) -> str:
    spec = spec.strip()
    return str(Path(spec).expanduser().resolve()) if _is_file_spec(spec) else spec


def _sha256(path: str) -> str:
    if not path or not Path(path).is_file():
        return ""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _module_version(module_name: str) -> str:
    top = module_name.split(".")[0]
    for dist in importlib.metadata.packages_distributions().get(top, []):
        try:
            return f"{dist} {importlib.metadata.version(dist)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return ""


def _import_file(path: Path):
    if not path.is_file():
        raise PluginError(f"plugin {str(path)!r}: no such file")
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:10]
    name = f"dlbench_plugin_{path.stem.replace('-', '_')}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"plugin {str(path)!r}: not an importable Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before exec: dataclasses and pickling look the module up by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _guarded(spec: str, load):
    """Run ``load()``; any failure becomes one :class:`PluginError` line naming the plugin."""
    before = set(registry._MODELS)
    try:
        result = load()
    except PluginError:
        raise
    except registry.DuplicateModelError as error:
        raise PluginError(f"plugin {spec!r}: {error}") from None
    except Exception as error:  # the plugin's own code: report it in one line
        raise PluginError(f"plugin {spec!r} failed to import: {type(error).__name__}: {error}") from None
    added = tuple(n for n in registry._MODELS if n not in before)
    return result, added


def _load_one(spec: str) -> LoadedPlugin:
    key = _normalise(spec)
    if not key:
        raise PluginError("empty plugin name")
    if key in _LOADED:
        return _LOADED[key]
    import dlbench.layers  # noqa: F401  (the built-ins first: a plugin may not take their names)

    if _is_file_spec(key):
        module, added = _guarded(key, lambda: _import_file(Path(key)))
        loaded = LoadedPlugin(key, "file", key, _sha256(key), "", added)
    else:
        if importlib.util.find_spec(key.split(".")[0]) is None:
            raise PluginError(f"plugin {key!r}: no module of that name is importable (give a module name or a .py path)")
        module, added = _guarded(key, lambda: importlib.import_module(key))
        path = getattr(module, "__file__", None) or ""
        loaded = LoadedPlugin(key, "module", path, _sha256(path), _module_version(key), added)
    _LOADED[key] = loaded
    return loaded


def _export(specs: Iterable[str]) -> None:
    """Add ``specs`` to ``DLBENCH_PLUGINS`` so that child processes load them too."""
    current = [s for s in (os.environ.get(ENV_VAR) or "").split(",") if s.strip()]
    known = {_normalise(s) for s in current}
    for spec in specs:
        if spec not in known:
            current.append(spec)
            known.add(spec)
    if current:
        os.environ[ENV_VAR] = ",".join(current)


def request_plugins(specs: Sequence[str]) -> None:
    """Name plugins for this process and its children without importing them yet (no JAX import).

    They are added to ``DLBENCH_PLUGINS`` (files as absolute paths) and imported by the next
    :func:`load_models`; a command that checks its inputs before touching JAX uses this.
    """
    _export(_normalise(s) for s in specs if s.strip())


def load_plugins(specs: Sequence[str]) -> list[LoadedPlugin]:
    """Import each plugin (module name or ``.py`` path) once and export them to ``DLBENCH_PLUGINS``.

    Returns what each spec loaded. Raises :class:`PluginError` (one line naming the plugin) when one
    cannot be found or imported or registers a model name that is taken.
    """
    loaded = [_load_one(s) for s in specs if s.strip()]
    _export(p.spec for p in loaded)
    return loaded


def _load_entry_points() -> list[LoadedPlugin]:
    out = []
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        key = f"entry-point:{ep.name}"
        if key in _LOADED:
            out.append(_LOADED[key])
            continue
        import dlbench.layers  # noqa: F401

        target, added = _guarded(f"{ep.name} = {ep.value} (entry point of {ep.dist.name if ep.dist else '?'})", ep.load)
        module = sys.modules.get(ep.module)
        path = getattr(module, "__file__", None) or ""
        version = f"{ep.dist.name} {ep.dist.version}" if ep.dist is not None else _module_version(ep.module)
        _LOADED[key] = LoadedPlugin(key, "entry-point", path, _sha256(path), version, added)
        out.append(_LOADED[key])
    return out


def load_models(specs: Sequence[str] = ()) -> list[LoadedPlugin]:
    """Register every model this process can see: built-ins, entry points, ``DLBENCH_PLUGINS``, ``specs``.

    Idempotent; the entry points and the environment are read on the first call (and the environment
    again whenever it names a plugin not yet loaded). Returns what ``specs`` loaded.
    """
    global _DEFAULTS_LOADED
    import dlbench.layers  # noqa: F401  (registers the built-in models)

    if not _DEFAULTS_LOADED:
        _load_entry_points()
        _DEFAULTS_LOADED = True
    env = [s for s in (os.environ.get(ENV_VAR) or "").split(",") if s.strip()]
    for spec in env:
        _load_one(spec)
    return load_plugins(specs)


def loaded_plugins() -> list[dict]:
    """Every plugin loaded in this process, in load order: spec, kind, path, sha256, version, models."""
    return [p.as_dict() for p in _LOADED.values()]
