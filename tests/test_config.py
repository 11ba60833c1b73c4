"""Suite files -> validated dataclasses: key checking, resolution order, --set overrides."""

import pytest

from dlbench.config import (
    ConfigError,
    ModelConfig,
    TrainConfig,
    apply_sets,
    load_suite,
    parse_set,
    suite_from_mapping,
    suite_paths,
)

BASE = {"include": ["attention"], "seeds": [3], "tasks": {"basicmotions": {}}}


def test_every_field_has_help_and_default():
    import dataclasses

    for cls in (ModelConfig, TrainConfig):
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help"
            assert f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


@pytest.mark.parametrize("name", sorted(suite_paths()))
def test_every_suite_file_loads(name):
    suite = load_suite(name)
    assert suite.name == name and suite.description
    text = suite_paths()[name].read_text()
    assert text.startswith("#"), "a suite file documents itself in a header comment"


def test_unknown_key_names_file_and_suggests():
    with pytest.raises(ConfigError, match=r"s\.toml: unknown key 'train\.step'; did you mean 'train\.steps'\?"):
        suite_from_mapping({**BASE, "train": {"step": 3}}, path="s.toml")
    with pytest.raises(ConfigError, match="s.toml: unknown key 'tasks.basicmotions.models.lru.learning_rate'"):
        suite_from_mapping({**BASE, "tasks": {"basicmotions": {"models": {"lru": {"learning_rate": 1}}}}}, path="s.toml")
    with pytest.raises(ConfigError, match="unknown key 'seed'; did you mean 'seeds'"):
        suite_from_mapping({**BASE, "seed": 1}, path="s.toml")


def test_type_and_cross_field_errors():
    with pytest.raises(ConfigError, match=r"\[train\]: steps: expected an integer"):
        suite_from_mapping({**BASE, "train": {"steps": "ten"}}, path="s.toml")
    with pytest.raises(ConfigError, match="warmup_steps: must be in"):
        suite_from_mapping({**BASE, "train": {"steps": 10, "warmup_steps": 10}}, path="s.toml")
    with pytest.raises(ConfigError, match="kind: unknown value"):
        suite_from_mapping({**BASE, "kind": "trian"}, path="s.toml")
    # An int where a float is declared is fine (TOML writes 1 for 1.0).
    assert suite_from_mapping({**BASE, "train": {"lr": 1}}, path="s.toml").train.lr == 1.0


def test_resolution_order_later_wins():
    raw = {
        **BASE,
        "train": {"lr": 1.0, "steps": 10},
        "models": {"attention": {"lr": 2.0, "hidden_dim": 8}},
        "tasks": {"basicmotions": {"lr": 3.0, "models": {"attention": {"steps": 7, "time_channel": True}}}},
    }
    run = suite_from_mapping(raw, path="s.toml").resolve("basicmotions", "attention", 3)
    assert (run.train.lr, run.train.steps, run.model_settings.hidden_dim) == (3.0, 7, 8)
    assert run.task_config.time_channel and run.task_config.dataset == "basicmotions"
    raw, forced = apply_sets(raw, ["train.steps=2", "models.attention.hidden_dim=4"])
    run = suite_from_mapping(raw, path="s.toml", forced=forced).resolve("basicmotions", "attention", 3)
    assert (run.train.steps, run.model_settings.hidden_dim) == (2, 4)  # --set train.* caps every run


def test_parse_set_values():
    assert parse_set("train.lr=1e-3") == (("train", "lr"), 1e-3)
    assert parse_set("seeds=[0, 1]") == (("seeds",), [0, 1])
    assert parse_set("model.norm=layer") == (("model", "norm"), "layer")
    assert parse_set('model.norm="layer"') == (("model", "norm"), "layer")
    assert parse_set("tasks.decay.time_channel=true") == (("tasks", "decay", "time_channel"), True)
    for bad in ("train.steps", "=3", "train..lr=1", "train.lr=", "train.lr=1e-3)"):
        with pytest.raises(ConfigError, match="bad --set"):
            parse_set(bad)


def test_bad_set_keys_and_values():
    with pytest.raises(ConfigError, match="unknown key 'train.stpes'; did you mean 'train.steps'"):
        apply_sets(dict(BASE), ["train.stpes=3"])
    with pytest.raises(ConfigError, match="steps: expected an integer"):
        apply_sets(dict(BASE), ["train.steps=abc"])
    with pytest.raises(ConfigError, match="unknown key 'trian'"):
        apply_sets(dict(BASE), ["trian.steps=3"])


def test_profile_suite_passes_sweep_through():
    suite = suite_from_mapping({"kind": "profile", "sweep": {"models": ["a"], "lengths": [8]}}, path="p.toml")
    assert suite.kind == "profile" and dict(suite.sweep) == {"models": ["a"], "lengths": [8]}
    with pytest.raises(ConfigError, match="unknown key 'tasks'"):
        suite_from_mapping({"kind": "profile", "sweep": {"a": 1}, "tasks": {}}, path="p.toml")
    with pytest.raises(ConfigError, match="needs a \\[sweep\\] table"):
        suite_from_mapping({"kind": "profile"}, path="p.toml")
