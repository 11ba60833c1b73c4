"""Suite files (TOML) -> frozen, documented dataclasses; unknown keys are errors.

A training suite file looks like this (every key optional except what the task needs)::

    name = "smoke"                      # defaults to the file name
    kind = "train"                      # or "profile" (a scan-throughput sweep, see [sweep])
    description = "..."
    include = ["all"]                   # models to run: "all" or registered names
    seeds = [0, 1]

    [model]                             # ModelConfig fields shared by every run
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
import math
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dlbench.errors import DlbenchError, did_you_mean

SUITE_KINDS = ("train", "profile")
OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("constant", "cosine")
NORMS = ("batch", "layer", "batch-ema", "batch-debiased")
OUTPUT_ACTIVATIONS = ("tanh", "identity")
FORECAST_FEATURES = ("S", "MS", "M")  # Informer's names for the forecasting variable choice


class ConfigError(DlbenchError, ValueError):
    """A suite file or ``--set`` override that is not valid; the message names the file and key."""


def _help(text: str, default: Any = dataclasses.MISSING, factory: Any = dataclasses.MISSING) -> Any:
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata={"help": text})
    return dataclasses.field(default=default, metadata={"help": text})


def field_help(cls: type, name: str) -> str:
    """The help string of dataclass field ``cls.name`` (the one place CLI help is taken from)."""
    return next(f.metadata["help"] for f in dataclasses.fields(cls) if f.name == name)


def field_default(cls: type, name: str) -> Any:
    """The default of dataclass field ``cls.name``."""
    return next(f.default for f in dataclasses.fields(cls) if f.name == name)


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
        _fail(where, key, f"unknown value {value!r}{did_you_mean(value, choices)}; valid: {', '.join(choices)}")


# Bounds every suite value is checked against before anything runs (README "Inputs"): far beyond any
# sane experiment, tight enough that a typo (steps=1e20, seed 1e23, lr=inf) is refused, not run.
MAX_STEPS = 10_000_000
MAX_SIZE = 1 << 20  # batch sizes, sequence counts
MAX_WIDTH = 1 << 16  # hidden and state sizes
MAX_BLOCKS = 1024
MAX_SEQ_LEN = 1 << 24
MAX_SEED = 2**31 - 1  # seeds are int32 PRNG seeds
MAX_LR = 10.0
MAX_VAL_FRACTION = 0.5
HEADS = ("classification", "regression")
# Cross-field names that the backbone takes from the task, never from a suite's [model] table.
TASK_DERIVED = ("num_inputs", "num_outputs", "head", "output_step", "output_activation", "output_last")


def check_int(where: str, key: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        _fail(where, key, f"must be in [{low:_}, {high:_}], got {value:_}")


def check_float(where: str, key: str, value: float, low: float, high: float, *, low_open: bool = False) -> None:
    if not math.isfinite(value):
        _fail(where, key, f"must be a finite number, got {value}")
    if value < low or (low_open and value == low) or value > high:
        _fail(where, key, f"must be in {'(' if low_open else '['}{low:g}, {high:g}], got {value:g}")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The ONE backbone config (docs/models.md section 1): everything that defines a model instance besides its
    name and seed. A suite's ``[model]`` table sets the user-facing fields; inputs, outputs, head,
    output step and output activation come from the task (:data:`TASK_DERIVED`)."""

    num_inputs: int = _help("Input channels per step (from the task).", 1)
    hidden_dim: int = _help("H, the width of every block.", 128)
    state_dim: int = _help("P, the state size of the sequence layer.", 64)
    num_blocks: int = _help("Residual blocks.", 2)
    num_outputs: int = _help("Classes (classification) or target channels (regression); from the task.", 10)
    head: str = _help("classification (mean over valid steps, then linear) or regression (per step); from the task.", "classification")
    norm: str = _help(
        "Normalisation in each block: batch (flax batch statistics, the default), layer, batch-ema (the LinOSS "
        "authors' equinox ema-mode BatchNorm) or batch-debiased (the D-LinOSS authors' equinox batch mode, "
        "debiased eval statistics).",
        "batch",
    )
    dropout: float = _help("Dropout rate inside the blocks, in [0, 1).", 0.05)
    output_step: int = _help("Regression targets are read at steps s-1, 2s-1, ...; from the task.", 1)
    output_activation: str = _help("tanh (the papers' regression head) or identity; from the task.", "tanh")
    output_last: int = _help("Forecasting: when > 0, the regression head reads only the last this many steps; from the task.", 0)
    scan: str = _help("Scan backend of the layer, or auto.", "auto")
    layer_options: dict = _help("Extra keyword arguments for the layer constructor.", factory=dict)

    def __post_init__(self):
        check_types(self, "")
        for key, high in (("num_inputs", MAX_SIZE), ("hidden_dim", MAX_WIDTH), ("state_dim", MAX_WIDTH),
                          ("num_blocks", MAX_BLOCKS), ("num_outputs", MAX_SIZE), ("output_step", MAX_SEQ_LEN)):
            check_int("", key, getattr(self, key), 1, high)
        check_int("", "output_last", self.output_last, 0, MAX_SEQ_LEN)
        _choice("", "norm", self.norm, NORMS)
        _choice("", "head", self.head, HEADS)
        _choice("", "output_activation", self.output_activation, OUTPUT_ACTIVATIONS)
        check_float("", "dropout", self.dropout, 0.0, 1.0)
        if self.dropout == 1.0:
            _fail("", "dropout", "must be < 1")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The optimiser, schedule and evaluation policy of one training run (docs/models.md section 8)."""

    optimizer: str = _help("adam or adamw (decoupled weight decay).", "adam")
    lr: float = _help(f"Peak learning rate, in (0, {MAX_LR:g}].", 1e-3)
    ssm_lr: float = _help(f"Learning rate of the SSM parameters (SSMParam), in [0, {MAX_LR:g}]; 0 means the same as lr.", 0.0)
    weight_decay: float = _help("AdamW weight decay (ignored by adam), in [0, 1e3].", 0.0)
    schedule: str = _help("constant, or cosine decay to 0 after the warm-up.", "constant")
    warmup_steps: int = _help("Linear warm-up steps from 0 to lr, in [0, steps).", 0)
    grad_clip: float = _help("Clip the global gradient norm to this value; 0 disables.", 0.0)
    steps: int = _help(f"Maximum optimisation steps, in [1, {MAX_STEPS:_}].", 1000)
    batch_size: int = _help("Training batch size (capped at the training-set size).", 32)
    eval_batch_size: int = _help("Batch size for validation and test passes.", 256)
    eval_every: int = _help("Evaluate on the validation split every this many steps.", 100)
    patience: int = _help("Stop after this many evaluations without validation improvement; 0 never stops.", 0)
    checkpoint_every: int = _help("Save state and best parameters every this many evaluations (RUN_DIR/checkpoints, "
                                  "for --resume); 0 saves only the best parameters at the end.", 10)

    def __post_init__(self):
        check_types(self, "")
        _choice("", "optimizer", self.optimizer, OPTIMIZERS)
        _choice("", "schedule", self.schedule, SCHEDULES)
        check_int("", "steps", self.steps, 1, MAX_STEPS)
        for key in ("batch_size", "eval_batch_size"):
            check_int("", key, getattr(self, key), 1, MAX_SIZE)
        check_int("", "eval_every", self.eval_every, 1, MAX_STEPS)
        check_float("", "lr", self.lr, 0.0, MAX_LR, low_open=True)
        check_float("", "ssm_lr", self.ssm_lr, 0.0, MAX_LR)
        check_float("", "weight_decay", self.weight_decay, 0.0, 1e3)
        check_float("", "grad_clip", self.grad_clip, 0.0, 1e12)
        if self.warmup_steps < 0 or self.warmup_steps >= self.steps:
            _fail("", "warmup_steps", f"must be in [0, steps={self.steps}), got {self.warmup_steps}")
        check_int("", "patience", self.patience, 0, MAX_STEPS)
        check_int("", "checkpoint_every", self.checkpoint_every, 0, MAX_STEPS)


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    """Which dataset a task reads and how (loader options; unused ones are ignored by a loader)."""

    dataset: str = _help("Registered task loader (see dlbench.tasks); defaults to the table name.", "")
    time_channel: bool = _help("Prepend the time channel t_k = k/L to the inputs (LinOSS protocol option).", False)
    val_fraction: float = _help(
        f"Fraction of the original train split carved out for validation (bundled sets), in (0, {MAX_VAL_FRACTION}].", 0.2
    )
    num_sequences: int = _help("Synthetic tasks: number of sequences (at least 4, so that a 70/15/15 split leaves none empty).", 100)
    seq_len: int = _help(f"Synthetic tasks: steps per sequence, in [1, {MAX_SEQ_LEN:_}].", 1000)
    data_seed: int = _help("Synthetic tasks: seed of the generated data (fixed across run seeds).", 0)
    input_len: int = _help("Forecasting: observed steps the model reads (L_in).", 720)
    pred_len: int = _help("Forecasting: steps predicted after them (L_out), read at L_out placeholder steps.", 720)
    train_fraction: float = _help("Forecasting: chronological train part, int(fraction n) steps (Informer 0.7).", 0.7)
    test_fraction: float = _help("Forecasting: test part at the end (Informer 0.2); validation is the rest.", 0.2)
    features: str = _help("Forecasting: 'S' target in and out, 'MS' all in, target out, 'M' all in and out.", "S")
    target_column: str = _help("Forecasting: the target column (empty: the dataset's, WTH: WetBulbCelsius).", "")

    def __post_init__(self):
        check_types(self, "")
        if self.dataset:
            check_name("", "dataset", self.dataset)
        check_float("", "val_fraction", self.val_fraction, 0.0, MAX_VAL_FRACTION, low_open=True)
        check_int("", "num_sequences", self.num_sequences, 4, MAX_SIZE)
        check_int("", "seq_len", self.seq_len, 1, MAX_SEQ_LEN)
        check_int("", "data_seed", self.data_seed, 0, MAX_SEED)
        check_int("", "input_len", self.input_len, 1, MAX_SEQ_LEN)
        check_int("", "pred_len", self.pred_len, 1, MAX_SEQ_LEN)
        train, test = self.train_fraction, self.test_fraction
        if not (0.0 < train < 1.0 and 0.0 < test < 1.0 and train + test < 1.0):
            _fail("", "train_fraction", f"train_fraction and test_fraction must be in (0, 1) and leave a "
                  f"validation part, got {train} and {test}")  # fmt: skip
        _choice("", "features", self.features, FORECAST_FEATURES)


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}$")


def check_name(where: str, key: str, name: str) -> None:
    """Suite and task names become folder names: letters, digits, ``_ . + -``; no path separators, no ``..``."""
    if not _NAME.match(name) or ".." in name:
        _fail(where, key, f"{name!r} is not a valid name (letters, digits, _ . + -; no path separators or '..')")


def build(cls: type, values: Mapping[str, Any], where: str) -> Any:
    """``cls(**values)`` with the error message prefixed by ``where`` (the file and table)."""
    try:
        return cls(**values)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}" if where else str(error)) from None


MODEL_KEYS = tuple(f.name for f in dataclasses.fields(ModelConfig) if f.name not in TASK_DERIVED)
TRAIN_KEYS = tuple(f.name for f in dataclasses.fields(TrainConfig))
TASK_KEYS = tuple(f.name for f in dataclasses.fields(TaskConfig))
# Flat override tables mix model and train keys, so the names must never collide.
assert not set(MODEL_KEYS) & set(TRAIN_KEYS) and not set(TASK_KEYS) & (set(MODEL_KEYS) | set(TRAIN_KEYS))
OVERRIDE_KEYS = MODEL_KEYS + TRAIN_KEYS
TOP_KEYS = ("name", "kind", "description", "plugins", "include", "seeds", "model", "train", "models", "tasks", "sweep")
PROFILE_KEYS = ("name", "kind", "description", "plugins", "sweep")


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One training run: a task, a model, a seed and their fully resolved settings."""

    task: str = _help("Task name (the [tasks.NAME] table).", "")
    model: str = _help("Registered model name.", "")
    seed: int = _help("Seed of initialisation, data order, dropout and seeded splits.", 0)
    task_config: TaskConfig = _help("The task's loader options.", factory=TaskConfig)
    model_settings: ModelConfig = _help("The backbone settings (task-derived fields at their defaults).", factory=ModelConfig)
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
    plugins: tuple[str, ...] = _help(
        "Plugins that register this suite's models: module names or .py files (relative to the suite file).", ()
    )
    include: tuple[str, ...] = _help('Models to run: "all" or registered names.', ("all",))
    seeds: tuple[int, ...] = _help("Seeds; every (task, model) runs once per seed.", (0,))
    model: ModelConfig = _help("[model]: backbone settings shared by every run.", factory=ModelConfig)
    train: TrainConfig = _help("[train]: optimisation settings shared by every run.", factory=TrainConfig)
    models: dict = _help("[models.NAME]: per-model overrides of model/train keys.", factory=dict)
    tasks: dict = _help("[tasks.NAME]: the tasks, their loader options and task-level overrides.", factory=dict)
    sweep: dict = _help("[sweep]: a profile suite's sweep, passed to dlbench.profile.", factory=dict)
    forced: dict = _help("--set model.KEY / train.KEY overrides that win over every table.", factory=dict)
    path: str = _help("The file the suite was read from.", "")

    def __post_init__(self):
        where = self.path or self.name
        check_types(self, where)
        check_name(where, "name", self.name)
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
        for seed in self.seeds:
            check_int(where, "seeds", seed, 0, MAX_SEED)
        for task in self.tasks:
            check_name(where, "tasks", task)

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
        return build(TaskConfig, table, f"{self.path}: [tasks.{task}]")

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
        settings = build(ModelConfig, {k: merged[k] for k in MODEL_KEYS}, where)
        train = build(TrainConfig, {k: merged[k] for k in TRAIN_KEYS}, where)
        return RunSpec(task, model, seed, self.task_config(task, model), settings, train)


def _fields(obj: Any) -> dict[str, Any]:
    # Shallow, unlike dataclasses.asdict (which deep-copies and cannot copy a MappingProxyType).
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


def to_dict(obj: Any) -> dict[str, Any]:
    """A config's fields as plain, JSON-ready values (read-only mappings become dicts)."""
    return {k: dict(v) if isinstance(v, Mapping) else v for k, v in _fields(obj).items()}


# --- reading files -------------------------------------------------------------------------------


def _unknown(where: str, key: str, valid: tuple[str, ...]) -> typing.NoReturn:
    hint = did_you_mean(key, valid) or f"; valid keys: {', '.join(valid)}"
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
    plugins = raw.get("plugins", ())
    if not isinstance(plugins, list | tuple) or not all(isinstance(p, str) and p.strip() for p in plugins):
        raise ConfigError(f"{path}: plugins must be a list of module names or .py paths, got {plugins!r}")
    # A plugin file is named relative to the suite that lists it, wherever dlbench is started from.
    plugins = tuple(str(Path(path).parent / p) if p.endswith(".py") and not Path(p).is_absolute() else p for p in plugins)
    # The fields every suite has, training or profile.
    header = dict(name=name, kind=kind, description=raw.get("description", ""), plugins=plugins, path=path)
    if kind == "profile":
        return SuiteConfig(**header, sweep=raw.get("sweep", {}))
    model = build(ModelConfig, _check_keys(path, raw.get("model", {}), MODEL_KEYS, "model"), f"{path}: [model]")
    train = build(TrainConfig, _check_keys(path, raw.get("train", {}), TRAIN_KEYS, "train"), f"{path}: [train]")
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
        **header,
        include=raw.get("include", ("all",)),
        seeds=raw.get("seeds", (0,)),
        model=model,
        train=train,
        models=models,
        tasks=tasks,
        forced=forced,
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
        hint = did_you_mean(ref, paths)
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
            default = ModelConfig() if parts[0] == "model" else TrainConfig()
            _check_one(default, parts[1], value, f"--set {text!r}")
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


def _check_one(default: Any, key: str, value: Any, where: str) -> None:
    """Check one --set value alone (type and bounds) against the defaults; the cross-field check
    (warmup_steps < steps) runs again on every resolved run, where the real steps are known."""
    try:
        dataclasses.replace(default, **({key: value, "steps": MAX_STEPS} if key == "warmup_steps" else {key: value}))
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None


def _deep_copy(raw: Any) -> Any:
    if isinstance(raw, Mapping):
        return {k: _deep_copy(v) for k, v in raw.items()}
    return raw


def load_suite(ref: str, sets: tuple[str, ...] | list[str] = ()) -> SuiteConfig:
    """Read, override and validate a suite by name or path."""
    path = find_suite(ref)
    raw, forced = apply_sets(read_toml(path), sets)
    return suite_from_mapping(raw, path=str(path), forced=forced)
