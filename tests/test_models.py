"""The shared backbone: published parameter counts, heads, masking, train/eval modes, model-blind loops."""

import ast
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dlbench
from dlbench.models import ModelConfig, build_model, count_parameters
from dlbench.registry import model_names


@pytest.mark.parametrize(
    "name, inputs, hidden, state, blocks, classes, expected",
    [
        ("linoss-im", 7, 128, 64, 2, 5, 134_279),  # LinOSS-IM on EigenWorms
        ("dlinoss", 61, 16, 16, 2, 2, 4_356),  # D-LinOSS on Heartbeat
        ("dlinoss", 64, 16, 64, 4, 2, 20_598),  # D-LinOSS on MotorImagery
    ],
)
def test_parameter_counts_match_the_papers(name, inputs, hidden, state, blocks, classes, expected):
    config = ModelConfig(num_inputs=inputs, hidden_dim=hidden, state_dim=state, num_blocks=blocks, num_outputs=classes)
    assert count_parameters(build_model(name, config)) == expected


def test_linoss_block_formula():
    # block = 2P + 4PH + H + 2(H^2 + H) + 2H + 1; D-LinOSS adds P.
    H, P, n_in, blocks, classes = 13, 7, 3, 3, 5
    block = 2 * P + 4 * P * H + H + 2 * (H * H + H) + 2 * H + 1
    expected = n_in * H + H + blocks * block + H * classes + classes
    config = ModelConfig(num_inputs=n_in, hidden_dim=H, state_dim=P, num_blocks=blocks, num_outputs=classes)
    assert count_parameters(build_model("linoss-imex", config)) == expected
    assert count_parameters(build_model("dlinoss", config)) == expected + blocks * P


@pytest.mark.parametrize("name", model_names())
def test_every_model_classifies_and_regresses(name):
    x = jax.random.normal(jax.random.key(0), (3, 24, 5))
    config = ModelConfig(num_inputs=5, hidden_dim=8, state_dim=4, num_blocks=2, num_outputs=3)
    logits = build_model(name, config)(x)
    assert logits.shape == (3, 3) and bool(jnp.all(jnp.isfinite(logits)))
    reg = ModelConfig(num_inputs=5, hidden_dim=8, state_dim=4, num_blocks=1, num_outputs=2, head="regression", output_step=8)
    y = build_model(name, reg)(x)
    assert y.shape == (3, 3, 2) and float(jnp.max(jnp.abs(y))) <= 1.0  # tanh head


def test_regression_reads_steps_s_minus_1_2s_minus_1():
    config = ModelConfig(num_inputs=2, hidden_dim=8, state_dim=4, num_blocks=1, num_outputs=1, head="regression", output_activation="identity")
    model = build_model("lru", config)
    model.eval()
    strided = build_model("lru", ModelConfig(**{**config.__dict__, "output_step": 4}))
    strided.eval()
    x = jax.random.normal(jax.random.key(1), (2, 12, 2))
    np.testing.assert_allclose(strided(x), model(x)[:, 3::4], rtol=1e-6)


def test_mask_makes_padding_invisible_in_eval_mode():
    config = ModelConfig(num_inputs=3, hidden_dim=8, state_dim=4, num_blocks=2, num_outputs=4)
    model = build_model("dlinoss", config)
    model.eval()
    x = jax.random.normal(jax.random.key(2), (1, 10, 3))
    padded = jnp.concatenate([x, 100.0 * jnp.ones((1, 7, 3))], axis=1)
    mask = jnp.arange(17)[None] < 10
    np.testing.assert_allclose(model(padded, mask), model(x), rtol=1e-5, atol=1e-6)


def test_dropout_only_in_train_mode_and_batchnorm_stats_update_only_in_train():
    config = ModelConfig(num_inputs=3, hidden_dim=8, state_dim=4, num_blocks=1, num_outputs=2, dropout=0.5)
    model = build_model("s5", config)
    x = jax.random.normal(jax.random.key(3), (4, 9, 3))
    model.eval()
    np.testing.assert_array_equal(model(x), model(x))
    before = np.asarray(model.blocks[0].norm.mean[...])
    model.train()
    assert not np.allclose(model(x), model(x))
    assert not np.allclose(model.blocks[0].norm.mean[...], before)


def np_gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def np_linear(module, x):
    return x @ np.asarray(module.kernel[...]) + np.asarray(module.bias[...])


def np_backbone(model, u, *, train: bool):
    """docs/models.md section 1 in float64 NumPy; only the sequence layer is the model's own (block.layer)."""
    x = np_linear(model.encoder, u)
    for block in model.blocks:
        s = x
        if train:  # batch statistics over (batch, time), biased variance, no affine part
            mean, var = x.mean(axis=(0, 1)), x.var(axis=(0, 1))
        else:
            mean, var = np.asarray(block.norm.mean[...]), np.asarray(block.norm.var[...])
        x = (x - mean) / np.sqrt(var + 1e-5)
        x = np.asarray(block.layer(jnp.asarray(x)))
        x = np_gelu_tanh(x)  # dropout 0
        x = np_linear(block.glu_value, x) * (1.0 / (1.0 + np.exp(-np_linear(block.glu_gate, x))))
        x = s + x
    return np_linear(model.decoder, x.mean(axis=1))


@pytest.mark.parametrize("train", [True, False], ids=["batch-statistics", "running-statistics"])
def test_backbone_matches_the_models_md_equations(train):
    """Encoder, block order (norm, layer, GELU, GLU, residual), BatchNorm and head, pinned numerically."""
    batch, length, n_in, hidden, state, classes = 2, 13, 3, 7, 5, 11
    config = ModelConfig(
        num_inputs=n_in, hidden_dim=hidden, state_dim=state, num_blocks=2, num_outputs=classes, dropout=0.0, scan="sequential"
    )
    with jax.enable_x64(True):
        model = build_model("lru", config, dtype=jnp.float64)
        rng = np.random.default_rng(0)
        if not train:
            # Non-trivial running statistics, so mean 0 / var 1 cannot pass. They must be float64 in a
            # float64 model (flax would keep them in float32; the backbone overrides that).
            for block in model.blocks:
                assert block.norm.mean[...].dtype == jnp.float64 and block.norm.var[...].dtype == jnp.float64
                block.norm.mean.set_value(jnp.asarray(rng.standard_normal(hidden)))
                block.norm.var.set_value(jnp.asarray(rng.uniform(0.5, 2.0, hidden)))
            model.eval()
        u = 3.0 * rng.standard_normal((batch, length, n_in)) + 1.0  # off-centre, so the norm matters
        want = np_backbone(model, u, train=train)
        got = model(jnp.asarray(u))
        assert got.dtype == jnp.float64 and got.shape == (batch, classes)
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-10, atol=1e-12)


def test_layer_norm_option():
    config = ModelConfig(num_inputs=3, hidden_dim=8, state_dim=4, num_blocks=1, num_outputs=2, norm="layer")
    assert build_model("mamba", config)(jnp.ones((2, 5, 3))).shape == (2, 2)


LOOPS = ("train.py", "timing.py", "profile.py")
CONCRETE = {"dlbench.layers.oscillatory", "dlbench.layers.s5", "dlbench.layers.lru", "dlbench.layers.mamba", "dlbench.layers.attention"}


@pytest.mark.parametrize("filename", LOOPS + ("models.py",))
def test_loops_and_backbone_import_no_concrete_layer(filename):
    path = Path(dlbench.__file__).parent / filename
    if not path.exists():
        pytest.skip(f"{filename} not present")
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
            imported.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            imported.update(a.name for a in node.names)
    assert not imported & CONCRETE, f"{filename} imports {imported & CONCRETE}"
    assert not any(name in imported for name in ("dlbench.layers.LinOSS", "dlbench.layers.Mamba"))
