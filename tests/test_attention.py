"""Causal softmax attention against a float64 NumPy reference: outputs and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from gradcheck import directional_derivatives, output_and_gradients

from dlbench.errors import UnknownChoiceError
from dlbench.layers import Attention

BATCH, H, HEAD = 3, 6, 2  # 3 heads of width 2
LENGTHS = (1, 2, 17, 257)
BACKENDS = [s for s in Attention.scans if s != "cudnn" or jax.default_backend() == "gpu"]
# jax.nn.dot_product_attention computes the softmax in float32 even for float64 inputs (it casts the
# logits), so float64 attention agrees with a float64 reference to float32 precision only.
SOFTMAX_F32_RTOL = 2e-6


def np_attention(u, Wqkv, Wout, D, heads, head_dim):
    """softmax(Q K^T / sqrt(d) + causal mask) V per head, output projection, D*u skip."""
    batch, length, _ = u.shape
    q, k, v = np.split(u @ Wqkv, 3, axis=-1)
    out = np.zeros((batch, length, heads * head_dim))
    for b in range(batch):
        for h in range(heads):
            cols = slice(h * head_dim, (h + 1) * head_dim)
            for t in range(length):
                scores = q[b, t, cols] @ k[b, : t + 1, cols].T / np.sqrt(head_dim)
                weights = np.exp(scores - scores.max())
                out[b, t, cols] = (weights / weights.sum()) @ v[b, : t + 1, cols]
    return out @ Wout + D * u


def params(layer):
    return {
        "qkv": np.asarray(layer.qkv.kernel[...]),
        "out": np.asarray(layer.out.kernel[...]),
        "D": np.asarray(layer.D[...]),
    }


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("length", LENGTHS)
def test_matches_reference_values_and_gradients(backend, length):
    with jax.enable_x64(True):
        layer = Attention(H, HEAD, rngs=nnx.Rngs(0), dtype=jnp.float64, param_dtype=jnp.float64, scan=backend)
        assert layer.num_heads == 3
        rng = np.random.default_rng(length)
        u = rng.standard_normal((BATCH, length, H))
        W = rng.standard_normal((BATCH, length, H))
        prm = params(layer)
        ref = np_attention(u, prm["qkv"], prm["out"], prm["D"], 3, HEAD)
        y, g_state, g_u = output_and_gradients(layer, u, W)
        assert y.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(y), ref, rtol=SOFTMAX_F32_RTOL, atol=SOFTMAX_F32_RTOL * np.abs(ref).max())
        grads = {"qkv": g_state.qkv.kernel[...], "out": g_state.out.kernel[...], "D": g_state.D[...]}

        def np_loss(at):
            p = at["params"]
            return np.sum(np_attention(at["u"], p["qkv"], p["out"], p["D"], 3, HEAD) * W)

        scale = np.abs(ref * W).sum()
        point, gradient = {"params": prm, "u": u}, {"params": grads, "u": g_u}
        for predicted, fd in directional_derivatives(np_loss, point, gradient, rng, directions=1):
            assert abs(predicted - fd) <= SOFTMAX_F32_RTOL * (abs(fd) + scale), (predicted, fd)


def test_causal_and_batched():
    layer = Attention(8, 4, rngs=nnx.Rngs(1))
    u = jax.random.normal(jax.random.key(0), (2, 12, 8))
    y = layer(u)
    changed = layer(u.at[:, 7].add(1.0))
    np.testing.assert_allclose(y[:, :7], changed[:, :7], rtol=1e-6, atol=1e-6)
    assert not np.allclose(y[:, 7:], changed[:, 7:])
    np.testing.assert_allclose(layer(u[1]), y[1], rtol=1e-5, atol=1e-6)


def test_unknown_implementation_lists_choices():
    with pytest.raises(UnknownChoiceError, match="valid choices: auto, xla, cudnn"):
        Attention(8, 4, rngs=nnx.Rngs(0), scan="associative")
