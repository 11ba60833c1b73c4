"""Suite files (TOML) -> frozen, documented dataclasses; unknown keys are errors.

A training suite file looks like this (every key optional except what the task needs)::

    name = "smoke"                      # defaults to the file name
    kind = "train"                      # or "profile" (a scan-throughput sweep, see [sweep])
    description = "..."
    include = ["all"]                   # models to run: "all" or registered names
    seeds = [0, 1]

    [model]                             # ModelSettings shared by every run
    hidden_dim = 16
    [train]                             # TrainConfig shared by every run
    steps = 300
    [models.dlinoss]                    # per-model overrides: any model or train key
    lr = 3e-3
    [tasks.basicmotions]                # the tasks to run (table order): TaskConfig keys plus
    val_fraction = 0.2                  #   task-level model/train overrides
    [tasks.basicmotions.models.lru]     # per-task, per-model overrides
    lr = 1e-3

Resolution order for one (task, model, seed) run, later wins: dataclass defaults, ``[model]`` /
``[train]``, ``[models.M]``, ``[tasks.T]``, ``[tasks.T.models.M]``, then ``--set model.KEY=...`` /
``--set train.KEY=...`` (so a command-line override caps every run, e.g. ``--set train.steps=5``).
Other ``--set`` keys (``seeds=[0]``, ``models.lru.lr=1e-3``, ``tasks.decay.seq_len=100``) are
written into the file's tables before validation.

This module imports no JAX: ``dlbench run`` validates a suite and checks its data in well under a
second before anything heavy is imported.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dlbench.errors import DlbenchError

SUITE_KINDS = ("train", "profile")
OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("constant", "cosine")
NORMS = ("batch", "layer")
OUTPUT_ACTIVATIONS = ("tanh", "identity")


class ConfigError(DlbenchError, ValueError):
    """A suite file or ``--set`` override that is not valid; the message names the file and key."""


def _help(text: str, default: Any = dataclasses.MISSING, factory: Any = dataclasses.MISSING) -> Any:
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata={"help": text})
    return dataclasses.field(default=default, metadata={"help": text})


def _fail(where: str, key: str, message: str) -> typing.NoReturn:
    raise ConfigError(f"{where}: {key}: {message}" if where else f"{key}: {message}")


def check_types(obj: Any, where: str) -> None:
    """Coerce ints to floats where a float is declared and reject values of the wrong type.

    TOML already gives typed values; this catches ``--set train.steps=abc`` and ``lr = "1e-3"``.
    Works on any dataclass (suite settings, ``profile`` sweeps); ``X | None`` fields accept None.
    """
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        hint = hints[f.name]
        origin = typing.get_origin(hint)
        if origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            if value is None and len(args) < len(typing.get_args(hint)):
                continue
            hint = args[0]
            origin = typing.get_origin(hint)
        ok = True
        if hint is float:
            if isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(obj, f.name, float(value))
            else:
                ok = isinstance(value, float)
        elif hint is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif hint is bool:
            ok = isinstance(value, bool)
        elif hint is str:
            ok = isinstance(value, str)
        elif origin is tuple:
            (item,) = {a for a in typing.get_args(hint) if a is not Ellipsis}
            if isinstance(value, list | tuple) and all(
                isinstance(v, item) and not (item is int and isinstance(v, bool)) for v in value
            ):
                object.__setattr__(obj, f.name, tuple(value))
            else:
                ok = False
        elif origin in (dict, Mapping) or hint is dict:
            if isinstance(value, Mapping):
                object.__setattr__(obj, f.name, types.MappingProxyType(dict(value)))
            else:
                ok = False
        if not ok:
            _fail(where, f.name, f"expected {_type_name(hint)}, got {value!r}")


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is tuple:
        return f"a list of {typing.get_args(hint)[0].__name__}"
    if typing.get_origin(hint) in (dict, Mapping):
        return "a table"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(hint, str(hint))


def _choice(where: str, key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        _fail(where, key, f"unknown value {value!r}; valid: {', '.join(choices)}")


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """The backbone around the sequence layer (MODELS.md section 1); inputs/outputs/head come from the task."""

    hidden_dim: int = _help("H, the width of every block.", 16)
    state_dim: int = _help("P, the state size of the sequence layer.", 16)
    num_blocks: int = _help("Residual blocks.", 2)
    norm: str = _help("Normalisation in each block: batch (the papers') or layer.", "batch")
    dropout: float = _help("Dropout rate inside the blocks.", 0.05)
    scan: str = _help("Scan backend of the layer, or auto.", "auto")
    layer_options: dict = _help("Extra keyword arguments for the layer constructor.", factory=dict)

    def validate(self, where: str) -> ModelSettings:
        check_types(self, where)
        for key in ("hidden_dim", "state_dim", "num_blocks"):
            if getattr(self, key) < 1:
                _fail(where, key, f"must be >= 1, got {getattr(self, key)}")
        _choice(where, "norm", self.norm, NORMS)
        if not 0.0 <= self.dropout < 1.0:
            _fail(where, "dropout", f"must be in [0, 1), got {self.dropout}")
        return self


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The optimiser, schedule and evaluation policy of one training run (MODELS.md section 8)."""

    optimizer: str = _help("adam or adamw (decoupled weight decay).", "adam")
    lr: float = _help("Peak learning rate.", 1e-3)
    ssm_lr: float = _help("Learning rate of the SSM parameters (SSMParam); 0 means the same as lr.", 0.0)
    weight_decay: float = _help("AdamW weight decay (ignored by adam).", 0.0)
    schedule: str = _help("constant, or cosine decay to 0 after the warm-up.", "constant")
    warmup_steps: int = _help("Linear warm-up steps from 0 to lr.", 0)
    grad_clip: float = _help("Clip the global gradient norm to this value; 0 disables.", 0.0)
    steps: int = _help("Maximum optimisation steps.", 1000)
    batch_size: int = _help("Training batch size (capped at the training-set size).", 32)
    eval_batch_size: int = _help("Batch size for validation and test passes.", 256)
    eval_every: int = _help("Evaluate on the validation split every this many steps.", 100)
    patience: int = _help("Stop after this many evaluations without validation improvement; 0 never stops.", 0)
    checkpoint_every: int = _help("Save state and best parameters every this many evaluations (RUN_DIR/checkpoints, "
                                  "for --resume); 0 saves only the best parameters at the end.", 10)

    def validate(self, where: str) -> TrainConfig:
        check_types(self, where)
        _choice(where, "optimizer", self.optimizer, OPTIMIZERS)
        _choice(where, "schedule", self.schedule, SCHEDULES)
        for key in ("steps", "batch_size", "eval_batch_size", "eval_every"):
            if getattr(self, key) < 1:
                _fail(where, key, f"must be >= 1, got {getattr(self, key)}")
        for key in ("lr", "ssm_lr", "weight_decay", "grad_clip"):
            if getattr(self, key) < 0:
                _fail(where, key, f"must be >= 0, got {getattr(self, key)}")
        if self.lr == 0:
            _fail(where, "lr", "must be > 0")
        if self.warmup_steps < 0 or self.warmup_steps >= self.steps:
            _fail(where, "warmup_steps", f"must be in [0, steps={self.steps}), got {self.warmup_steps}")
        if self.patience < 0:
            _fail(where, "patience", f"must be >= 0, got {self.patience}")
        if self.checkpoint_every < 0:
            _fail(where, "checkpoint_every", f"must be >= 0, got {self.checkpoint_every}")
        return self


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    """Which dataset a task reads and how (loader options; unused ones are ignored by a loader)."""

    dataset: str = _help("Registered task loader (see dlbench.tasks); defaults to the table name.", "")
    time_channel: bool = _help("Prepend the time channel t_k = k/L to the inputs (LinOSS protocol option).", False)
    val_fraction: float = _help("Fraction of the original train split carved out for validation (bundled sets).", 0.2)
    num_sequences: int = _help("Synthetic tasks: number of sequences.", 100)
    seq_len: int = _help("Synthetic tasks: steps per sequence.", 1000)
    data_seed: int = _help("Synthetic tasks: seed of the generated data (fixed across run seeds).", 0)

    def validate(self, where: str) -> TaskConfig:
        check_types(self, where)
        if not 0.0 < self.val_fraction < 1.0:
            _fail(where, "val_fraction", f"must be in (0, 1), got {self.val_fraction}")
        for key in ("num_sequences", "seq_len"):
            if getattr(self, key) < 1:
                _fail(where, key, f"must be >= 1, got {getattr(self, key)}")
        return self


MODEL_KEYS = tuple(f.name for f in dataclasses.fields(ModelSettings))
TRAIN_KEYS = tuple(f.name for f in dataclasses.fields(TrainConfig))
TASK_KEYS = tuple(f.name for f in dataclasses.fields(TaskConfig))
# Flat override tables mix model and train keys, so the names must never collide.
assert not set(MODEL_KEYS) & set(TRAIN_KEYS) and not set(TASK_KEYS) & (set(MODEL_KEYS) | set(TRAIN_KEYS))
OVERRIDE_KEYS = MODEL_KEYS + TRAIN_KEYS
TOP_KEYS = ("name", "kind", "description", "include", "seeds", "model", "train", "models", "tasks", "sweep")
PROFILE_KEYS = ("name", "kind", "description", "sweep")


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One training run: a task, a model, a seed and their fully resolved settings."""

    task: str = _help("Task name (the [tasks.NAME] table).", "")
    model: str = _help("Registered model name.", "")
    seed: int = _help("Seed of initialisation, data order, dropout and seeded splits.", 0)
    task_config: TaskConfig = _help("The task's loader options.", factory=TaskConfig)
    model_settings: ModelSettings = _help("The backbone settings.", factory=ModelSettings)
    train: TrainConfig = _help("The optimisation settings.", factory=TrainConfig)

    @property
    def key(self) -> tuple[str, str, int]:
        """The cell a run fills in the result table (used by --resume)."""
        return (self.task, self.model, self.seed)

    def settings(self) -> dict[str, Any]:
        """Every resolved setting as one flat dict (for --dry-run and the run plan)."""
        out: dict[str, Any] = {}
        for part in (self.task_config, self.model_settings, self.train):
            for f in dataclasses.fields(part):
                value = getattr(part, f.name)
                out[f.name] = dict(value) if isinstance(value, Mapping) else value
        return out


@dataclasses.dataclass(frozen=True)
class SuiteConfig:
    """A validated suite file: what to run, on which tasks, with which settings."""

    name: str = _help("Suite name (defaults to the file name).", "")
    kind: str = _help("train (model x task x seed training runs) or profile (a scan-throughput sweep).", "train")
    description: str = _help("One line shown by `dlbench suites`.", "")
    include: tuple[str, ...] = _help('Models to run: "all" or registered names.', ("all",))
    seeds: tuple[int, ...] = _help("Seeds; every (task, model) runs once per seed.", (0,))
    model: ModelSettings = _help("[model]: backbone settings shared by every run.", factory=ModelSettings)
    train: TrainConfig = _help("[train]: optimisation settings shared by every run.", factory=TrainConfig)
    models: dict = _help("[models.NAME]: per-model overrides of model/train keys.", factory=dict)
    tasks: dict = _help("[tasks.NAME]: the tasks, their loader options and task-level overrides.", factory=dict)
    sweep: dict = _help("[sweep]: a profile suite's sweep, passed to dlbench.profile.", factory=dict)
    forced: dict = _help("--set model.KEY / train.KEY overrides that win over every table.", factory=dict)
    path: str = _help("The file the suite was read from.", "")

    def __post_init__(self):
        where = self.path or self.name
        check_types(self, where)
        _choice(where, "kind", self.kind, SUITE_KINDS)
        if self.kind == "profile":
            if not self.sweep:
                _fail(where, "sweep", "a profile suite needs a [sweep] table")
            return
        if not self.tasks:
            _fail(where, "tasks", "a train suite needs at least one [tasks.NAME] table")
        if not self.include:
            _fail(where, "include", "no models to run")
        if not self.seeds:
            _fail(where, "seeds", "no seeds to run")
        if len(set(self.seeds)) != len(self.seeds):
            _fail(where, "seeds", f"duplicate seeds in {list(self.seeds)}")

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(self.tasks)

    def model_names(self, available: tuple[str, ...]) -> tuple[str, ...]:
        """``include`` with "all" expanded to ``available`` (the registered names, in order)."""
        names: list[str] = []
        for n in self.include:
            for m in available if n == "all" else (n,):
                if m not in names:
                    names.append(m)
        return tuple(names)

    def task_config(self, task: str, model: str | None = None) -> TaskConfig:
        """The loader options of ``task`` (with ``[tasks.T.models.M]``'s loader keys when ``model`` is given)."""
        table = {k: v for k, v in self.tasks[task].items() if k in TASK_KEYS}
        if model is not None:
            table.update({k: v for k, v in self.tasks[task]["models"].get(model, {}).items() if k in TASK_KEYS})
        table.setdefault("dataset", task)
        return TaskConfig(**table).validate(f"{self.path}: [tasks.{task}]")

    def resolve(self, task: str, model: str, seed: int) -> RunSpec:
        """The fully resolved settings of one run (resolution order in the module docstring)."""
        task_table = self.tasks[task]
        layers = [
            _fields(self.model) | _fields(self.train),
            self.models.get(model, {}),
            {k: v for k, v in task_table.items() if k in OVERRIDE_KEYS},
            {k: v for k, v in task_table.get("models", {}).get(model, {}).items() if k in OVERRIDE_KEYS},
            self.forced,
        ]
        merged: dict[str, Any] = {}
        for layer in layers:
            merged.update(layer)
        where = f"{self.path}: run {task}/{model}/seed {seed}"
        settings = ModelSettings(**{k: merged[k] for k in MODEL_KEYS}).validate(where)
        train = TrainConfig(**{k: merged[k] for k in TRAIN_KEYS}).validate(where)
        return RunSpec(task, model, seed, self.task_config(task, model), settings, train)


def _fields(obj: Any) -> dict[str, Any]:
    # Shallow, unlike dataclasses.asdict (which deep-copies and cannot copy a MappingProxyType).
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


# --- reading files -------------------------------------------------------------------------------


def _unknown(where: str, key: str, valid: tuple[str, ...]) -> typing.NoReturn:
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(valid)}"
    raise ConfigError(f"{where}: unknown key {key!r}{hint}")


def _check_keys(where: str, table: Any, valid: tuple[str, ...], section: str) -> dict:
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: {section} must be a table, got {table!r}")
    for key in table:
        if key not in valid:
            _unknown(where, f"{section}.{key}" if section else key, tuple(f"{section}.{v}" if section else v for v in valid))
    return dict(table)


def suite_from_mapping(raw: Mapping[str, Any], *, path: str = "<suite>", forced: Mapping | None = None) -> SuiteConfig:
    """Validate a parsed suite (the TOML tables) into a :class:`SuiteConfig`; errors name ``path`` and key."""
    raw = dict(raw)
    kind = raw.get("kind", "train")
    _check_keys(path, raw, PROFILE_KEYS if kind == "profile" else TOP_KEYS, "")
    name = raw.get("name") or Path(path).stem
    if kind == "profile":
        return SuiteConfig(
            name=name, kind=kind, description=raw.get("description", ""), sweep=raw.get("sweep", {}), path=path
        )
    model = ModelSettings(**_check_keys(path, raw.get("model", {}), MODEL_KEYS, "model")).validate(f"{path}: [model]")
    train = TrainConfig(**_check_keys(path, raw.get("train", {}), TRAIN_KEYS, "train")).validate(f"{path}: [train]")
    if not isinstance(raw.get("models", {}), Mapping):
        raise ConfigError(f"{path}: models must be a table of per-model overrides, got {raw.get('models')!r}")
    models = dict(raw.get("models", {}))
    for m, table in models.items():
        models[m] = _check_keys(path, table, OVERRIDE_KEYS, f"models.{m}")
    tasks = raw.get("tasks", {})
    if not isinstance(tasks, Mapping):
        raise ConfigError(f"{path}: tasks must be a table of [tasks.NAME] tables, got {tasks!r}")
    tasks = dict(tasks)
    for t, table in tasks.items():
        table = _check_keys(path, table, TASK_KEYS + OVERRIDE_KEYS + ("models",), f"tasks.{t}")
        per_model = _check_keys(path, table.get("models", {}), tuple(table.get("models", {})), f"tasks.{t}.models")
        # Per-task, per-model tables may also set loader options (the papers pick the time channel per model).
        table["models"] = {
            m: _check_keys(path, v, OVERRIDE_KEYS + TASK_KEYS[1:], f"tasks.{t}.models.{m}") for m, v in per_model.items()
        }
        tasks[t] = table
    forced = dict(forced or {})
    for key in forced:
        if key not in OVERRIDE_KEYS:
            _unknown("--set", key, OVERRIDE_KEYS)
    suite = SuiteConfig(
        name=name,
        kind=kind,
        description=raw.get("description", ""),
        include=raw.get("include", ("all",)),
        seeds=raw.get("seeds", (0,)),
        model=model,
        train=train,
        models=models,
        tasks=tasks,
        forced=forced,
        path=path,
    )
    # Resolve every (task, model) pair once so a bad per-model value fails now, not mid-suite.
    for t in suite.tasks:
        suite.task_config(t)
        for m in set(suite.models) | set(suite.tasks[t]["models"]) | {"_defaults"}:
            suite.resolve(t, m, suite.seeds[0])
    return suite


def suites_dir() -> Path:
    """The repository's (and the installed package's) ``suites/`` directory."""
    import dlbench

    package = Path(dlbench.__file__).resolve().parent
    for candidate in (package.parent / "suites", package / "suites"):
        if candidate.is_dir():
            return candidate
    return package.parent / "suites"


def suite_paths() -> dict[str, Path]:
    """Suite name -> file, for every ``*.toml`` in :func:`suites_dir`."""
    return {p.stem: p for p in sorted(suites_dir().glob("*.toml"))}


def find_suite(ref: str) -> Path:
    """A suite name (``smoke``) or a path to a ``.toml`` file -> the file."""
    path = Path(ref)
    if path.suffix == ".toml" or path.is_file():
        if not path.is_file():
            raise ConfigError(f"{ref}: no such suite file")
        return path
    paths = suite_paths()
    if ref not in paths:
        close = difflib.get_close_matches(ref, paths, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown suite {ref!r}{hint}; valid suites: {', '.join(paths)} (or a path to a .toml file)")
    return paths[ref]


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML ({error})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid TOML (not UTF-8 text)") from None


# --- --set overrides -----------------------------------------------------------------------------

_BARE = re.compile(r"^[A-Za-z_][\w.\-]*$")


def parse_set(text: str) -> tuple[tuple[str, ...], Any]:
    """``"train.steps=50"`` -> (("train", "steps"), 50). Values use TOML syntax; bare words are strings."""
    key, sep, value = text.partition("=")
    key, value = key.strip(), value.strip()
    parts = tuple(p.strip() for p in key.split("."))
    if not sep or not key or not all(parts) or not value:
        raise ConfigError(f"bad --set {text!r}: expected KEY=VALUE, e.g. train.steps=50")
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        if value in ("True", "False") or not _BARE.match(value):
            raise ConfigError(f"bad --set {text!r}: {value!r} is not a TOML value (quote strings, use true/false)") from None
        parsed = value
    return parts, parsed


def apply_sets(raw: dict[str, Any], sets: tuple[str, ...] | list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Apply ``--set`` overrides: returns (the updated raw tables, the forced model/train keys)."""
    raw = _deep_copy(raw)
    forced: dict[str, Any] = {}
    for text in sets:
        parts, value = parse_set(text)
        if len(parts) == 2 and parts[0] in ("model", "train"):
            valid = MODEL_KEYS if parts[0] == "model" else TRAIN_KEYS
            if parts[1] not in valid:
                _unknown(f"--set {text!r}", ".".join(parts), tuple(f"{parts[0]}.{v}" for v in valid))
            # Type-check the value alone now; cross-field checks run per resolved run.
            default = ModelSettings() if parts[0] == "model" else TrainConfig()
            check_types(dataclasses.replace(default, **{parts[1]: value}), f"--set {text!r}")
            forced[parts[1]] = value
            continue
        if parts[0] not in TOP_KEYS:
            _unknown(f"--set {text!r}", parts[0], TOP_KEYS)
        table = raw
        for p in parts[:-1]:
            table = table.setdefault(p, {})
            if not isinstance(table, dict):
                raise ConfigError(f"bad --set {text!r}: {p!r} is not a table")
        table[parts[-1]] = value
    return raw, forced


def _deep_copy(raw: Any) -> Any:
    if isinstance(raw, Mapping):
        return {k: _deep_copy(v) for k, v in raw.items()}
    return raw


def load_suite(ref: str, sets: tuple[str, ...] | list[str] = ()) -> SuiteConfig:
    """Read, override and validate a suite by name or path."""
    path = find_suite(ref)
    raw, forced = apply_sets(read_toml(path), sets)
    return suite_from_mapping(raw, path=str(path), forced=forced)
