"""The authors' BatchNorms against a NumPy reference of equinox's documented semantics, and the IMEX1
band projection's gradient at exact ties (issue 15).

Reference semantics (m = 0.99, eps = 1e-5, statistics over (batch, time) per channel, biased var):
- "batch-ema" (equinox legacy ema mode, LinOSS): call 1 running := batch, normalise with it; call n >= 2
  running := m running + (1 - m) batch, normalise with the updated running; eval: running.
- "batch-debiased" (equinox mode="batch", D-LinOSS): training normalises with batch statistics,
  hidden := m hidden + (1 - m) batch from (0, 1), n += 1; eval: hidden / (1 - m^n).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlbench.layers.kernels.oscillatory import _band, _project_imex1, band_projection
from dlbench.models import AuthorsBatchNorm, ModelConfig, build_model, count_parameters

M, EPS, H = 0.99, 1e-5, 7


class Reference:
    def __init__(self, mode):
        self.mode, self.n = mode, 0
        self.mean, self.var = np.zeros(H), np.ones(H)

    def train(self, x):
        bm, bv = x.mean((0, 1)), x.var((0, 1))
        if self.mode == "ema":
            if self.n == 0:
                self.mean, self.var = bm, bv
            else:
                self.mean, self.var = M * self.mean + (1 - M) * bm, M * self.var + (1 - M) * bv
            mean, var = self.mean, self.var
        else:
            self.mean, self.var = M * self.mean + (1 - M) * bm, M * self.var + (1 - M) * bv
            mean, var = bm, bv
        self.n += 1
        return (x - mean) / np.sqrt(var + EPS)

    def eval(self, x):
        mean, var = self.mean, self.var
        if self.mode == "debiased" and self.n > 0:
            mean, var = mean / (1 - M**self.n), var / (1 - M**self.n)
        return (x - mean) / np.sqrt(var + EPS)


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


@pytest.mark.parametrize("mode", ["ema", "debiased"])
def test_authors_batchnorm_matches_reference_over_training_calls_and_eval(mode):
    rng = np.random.default_rng(0)
    norm = AuthorsBatchNorm(H, mode=mode, param_dtype=jnp.float64)
    ref = Reference(mode)
    x0 = rng.normal(size=(3, 11, H))
    norm.use_running_average = True
    np.testing.assert_allclose(np.asarray(norm(jnp.asarray(x0))), ref.eval(x0), rtol=1e-12, atol=1e-12)  # before any training call
    for call in range(5):
        x = rng.normal(loc=call - 2.0, scale=1.0 + call, size=(3, 11, H))  # batches that differ
        norm.use_running_average = False
        np.testing.assert_allclose(np.asarray(norm(jnp.asarray(x))), ref.train(x), rtol=1e-12, atol=1e-12)
        norm.use_running_average = True
        np.testing.assert_allclose(np.asarray(norm(jnp.asarray(x0))), ref.eval(x0), rtol=1e-12, atol=1e-12)
    if mode == "ema":
        # From the second call on, ema normalises with mostly-old statistics, not the batch's own.
        x = rng.normal(loc=5.0, size=(3, 11, H))
        norm.use_running_average = False
        assert abs(float(np.asarray(norm(jnp.asarray(x))).mean())) > 1.0


@pytest.mark.parametrize("norm", ["batch-ema", "batch-debiased"])
def test_model_norm_choices_train_eval_and_count_like_the_papers(norm):
    config = ModelConfig(num_inputs=3, hidden_dim=H, state_dim=4, num_blocks=2, num_outputs=2, norm=norm)
    model = build_model("linoss-im", config, dtype=jnp.float64)
    base = build_model("linoss-im", ModelConfig(**{**config.__dict__, "norm": "batch"}), dtype=jnp.float64)
    assert count_parameters(model) == count_parameters(base)  # 2H + 1 per block, as the papers count
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 13, 3)))
    model.train()
    assert all(not b.norm.use_running_average for b in model.blocks)
    y1 = model(x)
    model.eval()
    assert all(b.norm.use_running_average for b in model.blocks)
    assert y1.shape == model(x).shape == (2, 2) and bool(jnp.all(jnp.isfinite(model(x))))


def test_imex1_band_projection_gives_the_authors_gradient_at_exact_ties():
    dt_raw, G_raw = jnp.array([0.3, -0.2]), jnp.array([0.5, 0.0])
    dt = jax.nn.sigmoid(dt_raw)
    lo, hi = _band(dt, dt * jax.nn.relu(G_raw), +1.0)
    for A_raw in (lo, hi, 0.5 * (lo + hi), lo - 1.0, hi + 1.0):
        np.testing.assert_array_equal(np.asarray(band_projection(A_raw, lo, hi)), np.asarray(jnp.clip(A_raw, lo, hi)))

    def authors(A_raw, G_raw, dt_raw):  # the D-LinOSS authors' form, written out
        dt = jax.nn.sigmoid(dt_raw)
        G = jax.nn.relu(G_raw)
        lo, hi = _band(dt, dt * G, +1.0)
        return lo + jax.nn.relu(A_raw - lo) - jax.nn.relu(A_raw - hi)

    def ours(A_raw, G_raw, dt_raw):
        return _project_imex1(A_raw, G_raw, dt_raw)[0]

    for A_raw in (lo, hi):  # exact ties at both edges
        g_ours = jax.grad(lambda *a: jnp.sum(ours(*a) ** 2), argnums=(0, 1, 2))(A_raw, G_raw, dt_raw)
        g_auth = jax.grad(lambda *a: jnp.sum(authors(*a) ** 2), argnums=(0, 1, 2))(A_raw, G_raw, dt_raw)
        for a, b in zip(g_ours, g_auth, strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        g_clip = jax.grad(lambda A: jnp.sum(jnp.clip(A, lo, hi) ** 2))(A_raw)
        assert not np.array_equal(np.asarray(g_ours[0]), np.asarray(g_clip))  # clip splits the tie
