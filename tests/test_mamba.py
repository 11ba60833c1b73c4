"""S6, Mamba and the selective scan against float64 NumPy references (outputs and gradients).

Dimensions are distinct primes (batch 2, channels 7, state 5, dt_rank 3) so a swapped axis cannot hide;
lengths 1, 2, 17, 257, 1031 hit the chunk boundaries of chunk_size 8. float64 is enabled only inside
the tests that need it (fixture ``x64``).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from gradcheck import directional_derivatives

from dlbench.errors import UnknownChoiceError
from dlbench.layers.base import SSMParam
from dlbench.layers.mamba import S6, Mamba, selective_scan
from dlbench.registry import get_model

BACKENDS = ("sequential", "associative", "chunked")
LENGTHS = (1, 2, 17, 257, 1031)
BATCH, CH, STATE, RANK = 2, 7, 5, 3
CHUNK = 8  # small, so every length above except 1 and 2 crosses chunk boundaries (1031 = 128 * 8 + 7)
F64_TOL = 1e-9
# float32 backends sum the same terms in different orders (sequential: left to right; associative:
# a log2(L)-deep tree of products exp(delta A) and sums), so they agree to a few float32 ulps times
# log2(L) of the output scale, not exactly. 1e-5 of the largest |output| at L = 1031 leaves ~10x margin.
F32_AGREE_RTOL = 1e-5
FD_RTOL = 1e-6


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


# ------------------------------------------------------------------------------------------------
# NumPy references (float64, a Python loop over time, exactly docs/models.md section 5)


def np_softplus(x):
    return np.logaddexp(0.0, x)


def np_silu(x):
    return x / (1.0 + np.exp(-x))


def ref_selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    u, delta, A, B, C = (np.asarray(x, np.float64) for x in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + np.asarray(delta_bias, np.float64)
    if delta_softplus:
        delta = np_softplus(delta)
    batch, length, channels = u.shape
    h = np.zeros((batch, channels, A.shape[1]))
    y = np.empty((batch, length, channels))
    for t in range(length):
        h = np.exp(delta[:, t, :, None] * A) * h + (delta[:, t] * u[:, t])[:, :, None] * B[:, t, None, :]
        y[:, t] = np.einsum("bdn,bn->bd", h, C[:, t])
    if D is not None:
        y = y + np.asarray(D, np.float64) * u
    if z is not None:
        y = y * np_silu(np.asarray(z, np.float64))
    return y


def ref_ssm(p, x, z, rank):
    """The S6/Mamba SSM on (batch, L, D) from a pure param dict."""
    state = p["A_log"].shape[1]
    x_dbl = x @ p["x_proj"]["kernel"]
    dt, B, C = x_dbl[..., :rank], x_dbl[..., rank : rank + state], x_dbl[..., rank + state :]
    delta_raw = dt @ p["dt_proj"]["kernel"]
    A = -np.exp(p["A_log"])
    return ref_selective_scan(x, delta_raw, A, B, C, p["D"], z, p["dt_bias"], True)


def ref_s6(p, u, rank):
    return ref_ssm(p, u, None, rank)


def ref_mamba(p, u, rank):
    xz = u @ p["in_proj"]["kernel"]
    x, z = np.split(xz, 2, axis=-1)
    w, b = p["conv_weight"], p["conv_bias"]
    width, length = w.shape[0], x.shape[1]
    conv = np.broadcast_to(b, x.shape).copy()
    for t in range(length):
        for k in range(width):
            s = t - (width - 1) + k  # causal: the last tap sees the current step
            if s >= 0:
                conv[:, t] += w[k] * x[:, s]
    x = np_silu(conv)
    return ref_ssm(p, x, z, rank) @ p["out_proj"]["kernel"]


# ------------------------------------------------------------------------------------------------
# Inputs


def scan_inputs(length, variant, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed + 1000 * length)
    args = dict(
        u=rng.normal(size=(BATCH, length, CH)),
        A=-np.exp(rng.normal(size=(CH, STATE))),
        B=rng.normal(size=(BATCH, length, STATE)),
        C=rng.normal(size=(BATCH, length, STATE)),
    )
    if variant == "plain":  # raw positive step sizes, no skip, gate or bias
        args["delta"] = rng.uniform(0.01, 0.5, size=(BATCH, length, CH))
        opts = {}
    else:
        args["delta"] = rng.normal(size=(BATCH, length, CH))
        args["D"] = rng.normal(size=(CH,))
        args["z"] = rng.normal(size=(BATCH, length, CH))
        args["delta_bias"] = rng.normal(size=(CH,)) - 1.0
        opts = dict(delta_softplus=True)
    return {k: v.astype(dtype) for k, v in args.items()}, opts


@functools.cache
def cached_reference(length, variant):
    args, opts = scan_inputs(length, variant)
    return ref_selective_scan(**args, **opts)


def jit_scan(backend, chunk_size=CHUNK, **opts):
    return jax.jit(functools.partial(selective_scan, scan=backend, chunk_size=chunk_size, **opts))


def randomise(layer, seed, scale=0.3):
    """Perturb every parameter so no symmetry of the init (A_log rows, D = 1) can hide a bug."""
    rng = np.random.default_rng(seed)
    state = nnx.state(layer)
    noisy = jax.tree.map(lambda x: jnp.asarray(np.asarray(x) + scale * rng.normal(size=x.shape), x.dtype), state)
    nnx.update(layer, noisy)


@functools.partial(jax.jit, static_argnums=0)
def _apply(graphdef, state, u):
    return nnx.merge(graphdef, state)(u)


def apply(layer, u):
    """layer(u), jitted (eager NNX dispatches and compiles every small op separately: slow on CI)."""
    graphdef, state = nnx.split(layer)
    return _apply(graphdef, state, jnp.asarray(u))


def pure(layer):
    return jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(layer)))


def make_layer(cls, backend, dtype=jnp.float64, seed=0, **kw):
    kw = dict(dt_rank=RANK, **kw)
    layer = cls(CH, STATE, rngs=nnx.Rngs(seed), dtype=dtype, param_dtype=dtype, scan=backend, chunk_size=CHUNK, **kw)
    randomise(layer, seed + 1)
    return layer


REFS = {S6: ref_s6, Mamba: ref_mamba}


# ------------------------------------------------------------------------------------------------
# selective_scan vs the reference


@pytest.mark.parametrize("variant", ["plain", "full"])
@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_selective_scan_matches_reference(x64, backend, length, variant):
    args, opts = scan_inputs(length, variant)
    out = jit_scan(backend, **opts)(**{k: jnp.asarray(v) for k, v in args.items()})
    assert out.dtype == jnp.float64 and out.shape == (BATCH, length, CH)
    np.testing.assert_allclose(np.asarray(out), cached_reference(length, variant), rtol=F64_TOL, atol=F64_TOL)


def test_reference_is_not_trivial():
    """The reference itself reacts to every argument (so the comparisons above can fail)."""
    args, opts = scan_inputs(17, "full")
    base = ref_selective_scan(**args, **opts)
    for name in args:
        changed = dict(args, **{name: args[name] + 0.1})
        assert not np.allclose(ref_selective_scan(**changed, **opts), base), name


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_selective_scan_gradients(x64, backend, length):
    args, opts = scan_inputs(length, "full", seed=7)
    names = list(args)
    rng = np.random.default_rng(3)
    W = rng.normal(size=(BATCH, length, CH))

    def loss(*xs):
        return jnp.sum(selective_scan(**dict(zip(names, xs, strict=True)), **opts, scan=backend, chunk_size=CHUNK) * W)

    grads = jax.jit(jax.grad(loss, argnums=tuple(range(len(names)))))(*(jnp.asarray(args[n]) for n in names))
    gradient = dict(zip(names, grads, strict=True))

    def np_loss(at):
        return np.sum(ref_selective_scan(**at, **opts) * W)

    for ad, fd in directional_derivatives(np_loss, dict(args), gradient, rng, directions=3):
        np.testing.assert_allclose(ad, fd, rtol=FD_RTOL)


def test_backends_agree_in_float32():
    length = 1031
    args, opts = scan_inputs(length, "full", dtype=np.float32)
    args = {k: jnp.asarray(v) for k, v in args.items()}
    outs = {b: np.asarray(jit_scan(b, chunk_size=64, **opts)(**args)) for b in BACKENDS}
    assert all(o.dtype == np.float32 for o in outs.values())
    scale = np.max(np.abs(outs["sequential"]))
    for b in ("associative", "chunked"):
        np.testing.assert_allclose(outs[b], outs["sequential"], rtol=0, atol=F32_AGREE_RTOL * scale)


def test_bfloat16_inputs_are_scanned_in_float32():
    args, opts = scan_inputs(257, "full", dtype=np.float32)
    bf = {k: jnp.asarray(v, jnp.bfloat16) for k, v in args.items()}
    out = jit_scan("chunked", **opts)(**bf)
    assert out.dtype == jnp.bfloat16
    # Same bfloat16 values, upcast before the call: a float32 scan differs only by the final rounding.
    ref = jit_scan("chunked", **opts)(**{k: v.astype(jnp.float32) for k, v in bf.items()})
    scale = float(jnp.max(jnp.abs(ref)))
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(ref), rtol=1e-2, atol=1e-2 * scale)
    # A bfloat16 state would drift far more than one output rounding over 257 steps.


def test_selective_scan_rejects_bad_backend_and_shape():
    args, _ = scan_inputs(2, "plain", dtype=np.float32)
    with pytest.raises(UnknownChoiceError):
        selective_scan(**args, scan="nope")
    with pytest.raises(ValueError):
        selective_scan(args["u"][0], args["delta"][0], args["A"], args["B"][0], args["C"][0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_selective_scan_is_causal(x64, backend):
    length, t = 17, 9
    args, opts = scan_inputs(length, "full")
    f = jit_scan(backend, **opts)
    base = np.asarray(f(**args))
    for name in ("u", "delta", "B", "C", "z"):
        changed = dict(args)
        changed[name] = args[name].copy()
        changed[name][:, t] += 1.0
        out = np.asarray(f(**changed))
        np.testing.assert_array_equal(out[:, :t], base[:, :t])
        assert np.all(np.abs(out[:, t] - base[:, t]).max(axis=-1) > 1e-6), name


# ------------------------------------------------------------------------------------------------
# Memory: the chunked backend must not materialise (L, D, N)


def _temp_bytes(fn, *args):
    stats = jax.jit(fn).lower(*args).compile().memory_analysis()
    if stats is None:  # pragma: no cover - every backend JAX ships with reports it today
        pytest.skip("memory_analysis unavailable on this backend")
    return stats.temp_size_in_bytes


MEM_D, MEM_N = 64, 16
STATE_BYTES = MEM_D * MEM_N * 4  # one float32 (D, N) state: what materialising (L, D, N) costs per step


def _memory_inputs(length):
    key = jax.random.split(jax.random.key(0), 4)
    u = jax.random.normal(key[0], (1, length, MEM_D))
    delta = jax.random.normal(key[1], (1, length, MEM_D))
    B = jax.random.normal(key[2], (1, length, MEM_N))
    C = jax.random.normal(key[3], (1, length, MEM_N))
    return u, delta, B, C


def _forward(backend):
    A = -jnp.ones((MEM_D, MEM_N))
    return lambda u, d, B, C: selective_scan(u, d, A, B, C, delta_softplus=True, scan=backend, chunk_size=64)


def _gradient(backend):
    f = _forward(backend)
    return jax.grad(lambda u, d, B, C: jnp.sum(f(u, d, B, C) ** 2), argnums=(0, 1, 2, 3))


def test_chunked_forward_does_not_materialise_all_states():
    """At L = 4096, D = 64, N = 16 one (L, D, N) float32 array is 16 MiB.

    Absolute: the associative scan's temporaries exceed it, the chunked scan's stay far below. Growth:
    from L to 2L the chunked temporaries grow by (L, D)-sized buffers only (delta, y: a few D values
    per step), far below one (D, N) state per step, while the associative scan's grow by more.
    """
    short, long = 4096, 8192
    full = short * STATE_BYTES
    chunked = _temp_bytes(_forward("chunked"), *_memory_inputs(short))
    associative = _temp_bytes(_forward("associative"), *_memory_inputs(short))
    assert associative > full, (associative, full)  # the comparison point does materialise them
    assert chunked < full / 3, (chunked, full)
    growth = (_temp_bytes(_forward("chunked"), *_memory_inputs(long)) - chunked) / (long - short)
    assert growth < STATE_BYTES / 2, (growth, STATE_BYTES)


def test_chunked_backward_stores_carries_not_states():
    """The backward keeps one (D, N) carry per chunk and recomputes each chunk (jax.checkpoint), so its
    temporaries stay below one (L, D, N) array. The sequential backward (reverse-mode lax.scan) stores
    per-step residuals, several (D, N) per step, and exceeds it: the check can tell the two apart."""
    length = 4096
    full = length * STATE_BYTES
    chunked = _temp_bytes(_gradient("chunked"), *_memory_inputs(length))
    sequential = _temp_bytes(_gradient("sequential"), *_memory_inputs(length))
    assert sequential > full, (sequential, full)
    assert chunked < full, (chunked, full)


# ------------------------------------------------------------------------------------------------
# The layers


@pytest.mark.parametrize("length", [1, 17, 257])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cls", [S6, Mamba])
def test_layer_matches_reference(x64, cls, backend, length):
    layer = make_layer(cls, backend)
    u = np.random.default_rng(length).normal(size=(BATCH, length, CH))
    out = apply(layer, u)
    assert out.dtype == jnp.float64 and out.shape == u.shape
    np.testing.assert_allclose(np.asarray(out), REFS[cls](pure(layer), u, RANK), rtol=F64_TOL, atol=F64_TOL)


def test_mamba_reference_with_other_conv_width_and_expand(x64):
    layer = make_layer(Mamba, "chunked", d_conv=3, expand=3)
    u = np.random.default_rng(0).normal(size=(BATCH, 17, CH))
    np.testing.assert_allclose(np.asarray(apply(layer, u)), ref_mamba(pure(layer), u, RANK), rtol=F64_TOL, atol=F64_TOL)


@pytest.mark.parametrize(
    ("cls", "backend", "length"),
    [(S6, b, 17) for b in BACKENDS] + [(Mamba, b, 17) for b in BACKENDS],
)
def test_layer_gradients(x64, cls, backend, length):
    layer = make_layer(cls, backend, seed=5)
    graphdef, state = nnx.split(layer)
    rng = np.random.default_rng(11)
    u = rng.normal(size=(BATCH, length, CH))
    W = rng.normal(size=(BATCH, length, CH))

    def loss(state, u):
        return jnp.sum(nnx.merge(graphdef, state)(u) * W)

    g_state, g_u = jax.jit(jax.grad(loss, argnums=(0, 1)))(state, jnp.asarray(u))
    ref = REFS[cls]
    point = {"params": pure(layer), "u": u}
    gradient = {"params": nnx.to_pure_dict(g_state), "u": g_u}

    def np_loss(at):
        return np.sum(ref(at["params"], at["u"], RANK) * W)

    for ad, fd in directional_derivatives(np_loss, point, gradient, rng):
        np.testing.assert_allclose(ad, fd, rtol=FD_RTOL)


@pytest.mark.parametrize("cls", [S6, Mamba])
def test_batched_equals_per_sequence(cls):
    layer = cls(CH, STATE, rngs=nnx.Rngs(0), scan="chunked", chunk_size=CHUNK, dt_rank=RANK)
    u = jax.random.normal(jax.random.key(1), (3, 19, CH))
    batched = apply(layer, u)
    for i in range(3):
        np.testing.assert_allclose(np.asarray(batched[i]), np.asarray(apply(layer, u[i])), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cls", [S6, Mamba])
def test_layer_is_causal(x64, cls, backend):
    layer = make_layer(cls, backend)
    length, t = 23, 11
    u = np.random.default_rng(0).normal(size=(length, CH))
    base = np.asarray(apply(layer, u))
    u2 = u.copy()
    u2[t] += 1.0
    out = np.asarray(apply(layer, u2))
    np.testing.assert_array_equal(out[:t], base[:t])
    assert np.abs(out[t] - base[t]).max() > 1e-6
    assert np.abs(out[t + 1 :] - base[t + 1 :]).max() > 1e-6  # the state carries the change forward


def test_param_names_shapes_and_types():
    H, N = CH, STATE
    s6 = S6(H, N, rngs=nnx.Rngs(0))
    assert s6.dt_rank == math.ceil(H / 16) == 1
    s6 = S6(H, N, rngs=nnx.Rngs(0), dt_rank=RANK)
    R = RANK
    assert s6.A_log.shape == (H, N) and isinstance(s6.A_log, SSMParam)
    assert s6.dt_bias.shape == (H,) and isinstance(s6.dt_bias, SSMParam)
    assert s6.D.shape == (H,) and type(s6.D) is nnx.Param
    assert s6.x_proj.kernel.shape == (H, R + 2 * N) and s6.x_proj.bias is None
    assert s6.dt_proj.kernel.shape == (R, H) and s6.dt_proj.bias is None
    assert set(nnx.to_pure_dict(nnx.state(s6))) == {"A_log", "dt_bias", "D", "x_proj", "dt_proj"}

    assert Mamba(H, N, rngs=nnx.Rngs(0)).dt_rank == 1  # ceil(d_model / 16), not d_inner, as the reference
    m = Mamba(H, N, rngs=nnx.Rngs(0), d_conv=3, expand=3, dt_rank=R)
    d = 3 * H
    shapes = jax.tree.map(lambda x: x.shape, nnx.to_pure_dict(nnx.state(m)))
    assert shapes == {
        "in_proj": {"kernel": (H, 2 * d)},
        "conv_weight": (3, d),
        "conv_bias": (d,),
        "x_proj": {"kernel": (d, R + 2 * N)},
        "dt_proj": {"kernel": (R, d)},
        "dt_bias": (d,),
        "A_log": (d, N),
        "D": (d,),
        "out_proj": {"kernel": (d, H)},
    }
    assert isinstance(m.A_log, SSMParam) and isinstance(m.dt_bias, SSMParam)


@pytest.mark.parametrize("cls", [S6, Mamba])
def test_initialisation_follows_the_reference(cls):
    N = STATE
    layer = cls(CH, N, rngs=nnx.Rngs(0), dt_min=1e-3, dt_max=1e-1)
    channels = layer.A_log.shape[0]
    expected = np.log(np.tile(np.arange(1, N + 1), (channels, 1)))
    np.testing.assert_allclose(np.asarray(layer.A_log[...]), expected, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(layer.D[...]), np.ones(channels))
    dt = np.asarray(jax.nn.softplus(layer.dt_bias[...]))
    assert dt.min() >= 1e-3 * (1 - 1e-4) and dt.max() <= 1e-1 * (1 + 1e-4)
    assert np.std(np.log(dt)) > 0.5  # log-uniform over two decades, not constant
    bound = layer.dt_rank**-0.5
    w = np.asarray(layer.dt_proj.kernel[...])
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.5 * bound


def test_dt_floor_applies():
    layer = S6(CH, STATE, rngs=nnx.Rngs(0), dt_min=1e-6, dt_max=1e-5, dt_floor=1e-4)
    np.testing.assert_allclose(np.asarray(jax.nn.softplus(layer.dt_bias[...])), 1e-4, rtol=1e-4)


def test_float64_layers_stay_float64(x64):
    for cls in (S6, Mamba):
        layer = cls(CH, STATE, rngs=nnx.Rngs(0), dtype=jnp.float64, param_dtype=jnp.float64, dt_rank=RANK)
        assert layer.A_log.dtype == jnp.float64
        assert apply(layer, jnp.ones((4, CH), jnp.float64)).dtype == jnp.float64


def test_bfloat16_layer_runs_and_returns_bfloat16():
    layer = Mamba(CH, STATE, rngs=nnx.Rngs(0), dtype=jnp.bfloat16, scan="chunked", chunk_size=CHUNK)
    out = apply(layer, jnp.ones((2, 20, CH), jnp.bfloat16))
    assert out.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(out.astype(jnp.float32))))


def test_registry_auto_and_bad_options():
    assert get_model("s6").layer is S6 and get_model("mamba").layer is Mamba
    layer = S6(CH, STATE, rngs=nnx.Rngs(0))
    assert layer.resolve_scan(50_000) == S6.preferred[jax.default_backend()]
    assert S6.preferred["gpu"] == "chunked" and Mamba.preferred["tpu"] == "chunked"
    with pytest.raises(UnknownChoiceError):
        Mamba(CH, STATE, rngs=nnx.Rngs(0), scan="fast")
    with pytest.raises(ValueError):
        S6(CH, STATE, rngs=nnx.Rngs(0), dt_rank=0)


def test_min_bytes_per_token():
    H, N = CH, STATE
    assert S6(H, N, rngs=nnx.Rngs(0)).min_bytes_per_token(4) == (3 * H + 2 * N) * 4
    assert Mamba(H, N, rngs=nnx.Rngs(0)).min_bytes_per_token(2) == (2 * H + 4 * 2 * H + 2 * N) * 2
