"""The scan primitives themselves (linear_scan, scan_chunks, fused_scan) against a float64 NumPy
sequential reference, at awkward lengths, for every backend and both semigroups."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlbench.layers.kernels.scan import BACKENDS, BLOCK2X2, DIAGONAL, fused_scan, linear_scan, scan_chunks

LENGTHS = (1, 2, 17, 257, 1031)
CHUNK = 16  # small, so that 17, 257 and 1031 all end in a partial chunk
S = 5  # state size (a prime distinct from every length)


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def reference(a, b, h0, block: bool):
    """h_k = a_k (.) h_{k-1} + b_k, one step at a time in float64 NumPy."""
    h = np.array(h0, dtype=b.dtype)
    out = []
    for k in range(b.shape[0]):
        if block:
            h = np.einsum("...ij,...j->...i", a[k], h) + b[k]
        else:
            h = a[k] * h + b[k]
        out.append(h)
    return np.stack(out)


def draw(length, block, complex_state, seed=0):
    rng = np.random.default_rng(seed + length)
    shape_a = (length, S, 2, 2) if block else (length, S)
    # |a| < 1 keeps the states bounded over 1031 steps, so relative errors are meaningful.
    a = rng.uniform(-0.7, 0.7, shape_a) if block else rng.uniform(-0.99, 0.99, shape_a)
    shape_b = (length, S, 2) if block else (length, S)
    b = rng.normal(size=shape_b)
    if complex_state:
        b = b + 1j * rng.normal(size=shape_b)
    h0 = rng.normal(size=shape_b[1:])
    return a, b, h0


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("block", [False, True], ids=["diagonal", "block2x2"])
def test_linear_scan_matches_sequential_reference(length, backend, block):
    a, b, h0 = draw(length, block, complex_state=not block)
    semigroup = BLOCK2X2 if block else DIAGONAL
    want = reference(a, b, np.zeros_like(h0), block)
    got = linear_scan(jnp.asarray(a), jnp.asarray(b), backend=backend, semigroup=semigroup, chunk_size=CHUNK)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-11, atol=1e-11)
    # with an initial state
    want0 = reference(a, b, h0, block)
    got0 = linear_scan(jnp.asarray(a), jnp.asarray(b), backend=backend, semigroup=semigroup, h0=jnp.asarray(h0), chunk_size=CHUNK)
    np.testing.assert_allclose(np.asarray(got0), want0, rtol=1e-11, atol=1e-11)


# 257: several chunks ending in a partial one; 1031 compiles the associative gradient for 30 s and tests nothing more.
@pytest.mark.parametrize("length", (1, 17, 257))
@pytest.mark.parametrize("backend", BACKENDS)
def test_invariant_linear_scan_and_its_gradient(length, backend):
    a, b, _ = draw(length, block=True, complex_state=False)
    a0 = a[0]
    want = reference(np.broadcast_to(a0, a.shape), b, np.zeros(b.shape[1:]), block=True)
    got = linear_scan(jnp.asarray(a0), jnp.asarray(b), backend=backend, semigroup=BLOCK2X2, invariant=True, chunk_size=CHUNK)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-11, atol=1e-11)

    def loss(a_, b_, be):
        return jnp.sum(jnp.sin(linear_scan(a_, b_, backend=be, semigroup=BLOCK2X2, invariant=True, chunk_size=CHUNK)))

    # Jitted: op-by-op dispatch of the associative scan's gradient took 24 s at L=257.
    grad = jax.jit(jax.grad(loss, argnums=(0, 1)), static_argnums=2)
    g = grad(jnp.asarray(a0), jnp.asarray(b), backend)
    g_ref = grad(jnp.asarray(a0), jnp.asarray(b), "sequential")
    for x, y in zip(g, g_ref, strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("chunk", [1, 3, 16, 2000])
def test_scan_chunks_runs_a_causal_body_exactly(length, chunk):
    x = np.random.default_rng(length).normal(size=(length, 3))

    def body(carry, xs):  # running sum within the chunk, continued from the carry
        ys = carry + jnp.cumsum(xs, axis=0)
        return ys[-1], ys

    got = scan_chunks(body, jnp.zeros(3), jnp.asarray(x), chunk)
    np.testing.assert_allclose(np.asarray(got), np.cumsum(x, axis=0), rtol=1e-12, atol=1e-12)
    assert got.shape == (length, 3)
    carry, ys = scan_chunks(body, jnp.zeros(3), jnp.asarray(x), chunk, return_carry=True)
    # zero padding is neutral for a sum, so the final carry is the total
    np.testing.assert_allclose(np.asarray(carry), x.sum(axis=0), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(np.asarray(ys), np.asarray(got))


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_fused_scan_forms_transitions_and_reads_out_per_run_of_steps(length, backend):
    rng = np.random.default_rng(length)
    d = rng.uniform(0.0, 1.0, (length, S))
    u = rng.normal(size=(length, S))
    c = rng.normal(size=(length, S))
    a = np.exp(-d)
    want = (reference(a, d * u, np.zeros(S), block=False) * c).sum(-1)

    got = fused_scan(
        (jnp.asarray(d), jnp.asarray(u), jnp.asarray(c)),
        lambda xs: (jnp.exp(-xs[0]), xs[0] * xs[1]),
        lambda h, xs: jnp.sum(h * xs[2], axis=-1),
        jnp.zeros(S),
        backend=backend,
        chunk_size=CHUNK,
    )
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-11, atol=1e-11)


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="unknown scan backend 'fast'"):
        linear_scan(jnp.ones(3), jnp.ones((4, 3)), backend="fast")
