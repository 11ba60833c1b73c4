"""LinOSS and D-LinOSS against a float64 NumPy reference written from the docs/models.md table.

Dimensions are distinct primes (batch 3, H 7, P 5) so a swapped axis cannot hide.
"""

from __future__ import annotations

import functools
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from gradcheck import directional_derivatives, output_and_gradients
from hypothesis import given, settings
from hypothesis import strategies as st

from dlbench.errors import UnknownChoiceError
from dlbench.layers.base import SSMParam
from dlbench.layers.kernels.oscillatory import _imex1, _project_imex1, block_eigenvalues
from dlbench.layers.oscillatory import (
    DiscretizationError,
    DLinOSS,
    LinOSS,
    UnstableDiscretizationWarning,
)
from dlbench.registry import get_model

BATCH, H, P = 3, 7, 5
LENGTHS = (1, 2, 17, 257, 1031)
# float64 backends vs the float64 reference: only reassociation of sums differs.
F64_RTOL = 1e-9
# float32 backends vs each other: ring init puts A up to ~1/dt^2 ~ 100, and docs/models.md measures float32
# D-LinOSS within ~5e-3 (relative to the output scale) of float64 at L ~ 250; backends differ by less.
F32_BACKEND_TOL = 5e-3
GRAD_LONG_SCANS = ("sequential", "chunked-toeplitz", "blocked")

# (layer class, discretization, extra constructor options). theta_min > 0 and r_max < 1 keep the
# ring init off the kinks of the projections (band edges, relu at G = 0) so finite differences are
# smooth; EX uses the "uniform" init, whose draws satisfy G >= dt A (stable), unlike the ring.
RING = dict(init="ring", r_min=0.9, r_max=0.99, theta_min=0.3)
VARIANTS = {
    "linoss-IM": (LinOSS, "IM", {}),
    "linoss-IMEX": (LinOSS, "IMEX", {}),
    "dlinoss-IMEX1": (DLinOSS, "IMEX1", RING),
    "dlinoss-IMEX2": (DLinOSS, "IMEX2", RING),
    "dlinoss-IM": (DLinOSS, "IM", RING),
    "dlinoss-EX": (DLinOSS, "EX", dict(init="uniform")),
}
ALL_CASES = [(v, s) for v, (cls, _, _) in VARIANTS.items() for s in cls.scans if s != "auto"]
# A backend sees only (M, f, B, C), never the variant, and a variant only changes (M, f). So every
# backend runs at every length on one variant of each class, every variant at every length on the
# sequential scan and the CPU default, and every variant x backend pair at one multi-step length.
FULL_LENGTH_VARIANTS = ("linoss-IM", "dlinoss-IMEX1")
FULL_LENGTH_SCANS = ("sequential", "blocked")
REFERENCE_CASES = [
    (variant, scan, length)
    for variant, scan in ALL_CASES
    for length in LENGTHS
    if variant in FULL_LENGTH_VARIANTS or scan in FULL_LENGTH_SCANS or length == 17
]


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def make(variant: str, scan: str, dtype=jnp.float64, seed: int = 0):
    cls, disc, options = VARIANTS[variant]
    return cls(H, P, rngs=nnx.Rngs(seed), dtype=dtype, param_dtype=dtype, scan=scan, chunk_size=16, discretization=disc, **options)


PARAM_NAMES = ("A_diag", "G_diag", "dt", "B", "C", "D")


def raw_params(layer) -> dict[str, np.ndarray]:
    out = {n: np.asarray(getattr(layer, n)[...], np.float64) for n in PARAM_NAMES if hasattr(layer, n)}
    out.setdefault("G_diag", np.zeros(P))
    return out


# ------------------------------------------------------------------ NumPy reference (docs/models.md sec. 2)


def np_project(variant: str, A_raw, G_raw, dt_raw):
    sig = 1.0 / (1.0 + np.exp(-dt_raw))
    if variant.startswith("linoss"):
        return np.maximum(A_raw, 0.0), np.zeros_like(A_raw), sig
    dt = sig
    disc = VARIANTS[variant][1]
    if disc in ("IMEX1", "IMEX2"):
        s = 1.0 if disc == "IMEX1" else -1.0
        G = np.maximum(G_raw, 0.0)
        if disc == "IMEX2":
            G = np.minimum(G, (1.0 - 1e-3) / dt)  # the documented guard
        q = dt * G
        d2 = np.maximum(dt**2, 1e-6)
        lo, hi = (2 + s * q - 2 * np.sqrt(1 + s * q)) / d2, (2 + s * q + 2 * np.sqrt(1 + s * q)) / d2
        return np.clip(A_raw, lo, hi), G, dt
    G = np.maximum(G_raw, -dt * A_raw) if disc == "IM" else np.maximum(G_raw, dt * A_raw)
    return np.maximum(A_raw, G**2 / 4), G, dt


def np_table(variant: str, A, G, dt):
    """M (P,2,2) and the F_k factor f (P,2), the table literally."""
    disc = VARIANTS[variant][1]
    one = np.ones_like(A)
    if variant == "linoss-IM":
        S = 1 / (1 + dt**2 * A)
        rows = [[S, -dt * A * S], [dt * S, S]], [dt * S, dt**2 * S]
    elif variant == "linoss-IMEX":
        rows = [[one, -dt * A], [dt, 1 - dt**2 * A]], [dt, dt**2]
    elif disc == "IMEX1":
        S = 1 + dt * G
        rows = [[1 / S, -dt * A / S], [dt / S, 1 - dt**2 * A / S]], [dt / S, dt**2 / S]
    elif disc == "IMEX2":
        rows = [[1 - dt * G, -dt * A], [dt * (1 - dt * G), 1 - dt**2 * A]], [dt, dt**2]
    elif disc == "IM":
        S = 1 + dt * G + dt**2 * A
        rows = [[1 / S, -dt * A / S], [dt / S, (1 + dt * G) / S]], [dt / S, dt**2 / S]
    else:  # EX
        rows = [[1 - dt * G, -dt * A], [dt, one]], [dt, 0 * dt]
    (m00, m01), (m10, m11) = rows[0]
    M = np.stack([np.stack([m00, m01], -1), np.stack([m10, m11], -1)], -2)
    return M, np.stack(rows[1], -1)


def np_forward(variant: str, prm: dict, u: np.ndarray) -> np.ndarray:
    """y (batch, L, H): w_k = M w_{k-1} + F_k, w_{-1} = 0, y_k = Re(C x_k) + D u_k, one step at a time."""
    A, G, dt = np_project(variant, prm["A_diag"], prm["G_diag"], prm["dt"])
    M, f = np_table(variant, A, G, dt)
    Bc = prm["B"][..., 0] + 1j * prm["B"][..., 1]
    Cc = prm["C"][..., 0] + 1j * prm["C"][..., 1]
    w = np.zeros((u.shape[0], P, 2), complex)
    ys = []
    for k in range(u.shape[1]):
        b = u[:, k] @ Bc.T  # (batch, P)
        w = np.einsum("pij,bpj->bpi", M, w) + f[None] * b[..., None]
        ys.append((w[..., 1] @ Cc.T).real + prm["D"] * u[:, k])
    return np.stack(ys, 1)


@functools.cache
def case_data(variant: str, length: int):
    """Inputs, loss weights and the reference output, shared by every backend of a variant."""
    with jax.enable_x64(True):
        prm = raw_params(make(variant, "sequential"))
    rng = np.random.default_rng(length)
    u = rng.standard_normal((BATCH, length, H))
    W = rng.standard_normal((BATCH, length, H))
    return prm, u, W, np_forward(variant, prm, u)


# ------------------------------------------------------------------ numerics


@pytest.mark.parametrize("variant,scan,length", REFERENCE_CASES)
def test_matches_reference_values_and_gradients(x64, variant, scan, length):
    prm, u, W, y_ref = case_data(variant, length)
    layer = make(variant, scan)

    # Gradients of the associative scan at long lengths cost most of the compile time, so long-length
    # gradients run on every backend for the FULL_LENGTH_VARIANTS (one per class: a backend sees only
    # (M, f, B, C)), and on the formulations whose backward passes differ most for the others.
    if length > 17 and scan not in GRAD_LONG_SCANS and variant not in FULL_LENGTH_VARIANTS:
        y = jitted(layer)(jnp.asarray(u))
        np.testing.assert_allclose(np.asarray(y), y_ref, rtol=F64_RTOL, atol=F64_RTOL * np.abs(y_ref).max())
        return

    y, g_state, g_u = output_and_gradients(layer, u, W)
    assert y.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(y), y_ref, rtol=F64_RTOL, atol=F64_RTOL * np.abs(y_ref).max())

    # Directional derivatives of the NumPy loss by central differences, against the JAX gradient.
    names = [n for n in PARAM_NAMES if hasattr(layer, n)]
    point = {"params": {n: prm[n] for n in names}, "u": u}
    gradient = {"params": {n: getattr(g_state, n)[...] for n in names}, "u": g_u}

    def np_loss(at):
        return np.sum(np_forward(variant, {**prm, **at["params"]}, at["u"]) * W)

    scale = np.abs(y_ref * W).sum()
    for predicted, fd in directional_derivatives(np_loss, point, gradient, np.random.default_rng(7)):
        assert abs(predicted - fd) <= 1e-5 * abs(fd) + 1e-8 * scale, (predicted, fd)


def jitted(layer):
    graph, state = nnx.split(layer)
    return lambda u: jax.jit(lambda s, u: nnx.merge(graph, s)(u))(state, u)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_backends_agree_in_float32(variant):
    cls = VARIANTS[variant][0]
    u = jnp.asarray(np.random.default_rng(1).standard_normal((BATCH, 257, H)), jnp.float32)
    outs = {s: np.asarray(jitted(make(variant, s, jnp.float32))(u)) for s in cls.scans if s != "auto"}
    ref = outs["sequential"]
    assert ref.dtype == np.float32
    for s, y in outs.items():
        assert np.abs(y - ref).max() <= F32_BACKEND_TOL * np.abs(ref).max(), s


def test_batched_equals_per_sequence():
    for scan in ("associative", "chunked-toeplitz", "blocked"):
        layer = make("dlinoss-IMEX1", scan, jnp.float32)
        u = jnp.asarray(np.random.default_rng(2).standard_normal((BATCH, 17, H)), jnp.float32)
        batched = np.asarray(jitted(layer)(u))
        assert batched.shape == (BATCH, 17, H)
        for i in range(BATCH):
            np.testing.assert_allclose(batched[i], np.asarray(jitted(layer)(u[i])), rtol=1e-5, atol=1e-6)


def test_auto_resolves_to_preferred_backend():
    layer = make("dlinoss-IMEX1", "auto", jnp.float32)
    assert layer.resolve_scan(50_000) == DLinOSS.preferred[jax.default_backend()]
    assert "chunked-toeplitz" in DLinOSS.scans and "chunked-toeplitz" in LinOSS.scans


# ------------------------------------------------------------------ initialisation


@pytest.mark.parametrize("ranges", [dict(r_min=0.9, r_max=1.0, theta_min=0.0, theta_max=math.pi),
                                    dict(r_min=0.5, r_max=0.8, theta_min=0.2, theta_max=1.0)])  # fmt: skip
def test_ring_init_places_eigenvalues_on_the_ring(x64, ranges):
    layer = DLinOSS(H, 97, rngs=nnx.Rngs(3), dtype=jnp.float64, param_dtype=jnp.float64, **ranges)
    lam = np.asarray(layer.eigenvalues())
    modulus, angle = np.abs(lam[:, 0]), np.angle(lam[:, 0])
    assert np.all(modulus >= ranges["r_min"] - 1e-9) and np.all(modulus <= ranges["r_max"] + 1e-9)
    assert np.all(angle >= ranges["theta_min"] - 1e-6) and np.all(angle <= ranges["theta_max"] + 1e-6)
    np.testing.assert_allclose(np.abs(lam[:, 1]), modulus, rtol=1e-9)
    # The projection is the identity at init: the stored A_diag, G_diag lie inside the IMEX1 band.
    A, G, _ = layer.projected()
    np.testing.assert_allclose(np.asarray(A), np.asarray(layer.A_diag[...]), rtol=1e-9)
    np.testing.assert_allclose(np.asarray(G), np.asarray(layer.G_diag[...]), rtol=1e-9)
    assert modulus.max() - modulus.min() > 0.1 * (ranges["r_max"] - ranges["r_min"])  # really spread


@pytest.mark.parametrize("disc", ["IMEX1", "IMEX2", "IM", "EX"])
def test_uniform_init_lies_where_projection_is_identity(x64, disc):
    layer = DLinOSS(H, P, rngs=nnx.Rngs(4), dtype=jnp.float64, param_dtype=jnp.float64, discretization=disc, init="uniform")
    A, G, _ = layer.projected()
    np.testing.assert_allclose(np.asarray(A), np.asarray(layer.A_diag[...]), rtol=1e-4)
    np.testing.assert_allclose(np.asarray(G), np.asarray(layer.G_diag[...]), rtol=1e-4)
    assert np.all((np.asarray(layer.A_diag[...]) >= 0) & (np.asarray(layer.A_diag[...]) <= 1))


def test_linoss_init_and_parameter_layout():
    layer = LinOSS(H, P, rngs=nnx.Rngs(5), discretization="IMEX")
    dl = DLinOSS(H, P, rngs=nnx.Rngs(5))
    shapes = {"A_diag": (P,), "dt": (P,), "B": (P, H, 2), "C": (H, P, 2), "D": (H,)}
    for name, shape in shapes.items():
        assert getattr(layer, name)[...].shape == shape and getattr(dl, name)[...].shape == shape
        assert isinstance(getattr(layer, name), SSMParam) == (name != "D")
        assert isinstance(getattr(layer, name), nnx.Param)
    assert dl.G_diag[...].shape == (P,) and isinstance(dl.G_diag, SSMParam) and not hasattr(layer, "G_diag")
    A = np.asarray(layer.A_diag[...])
    assert np.all((A >= 0) & (A < 1)) and np.all(np.abs(np.asarray(layer.B[...])) <= 1 / math.sqrt(H))
    assert np.all(np.abs(np.asarray(layer.C[...])) <= 1 / math.sqrt(P))
    # LinOSS-IMEX is symplectic: |lambda| = 1 while dt^2 A <= 4.
    np.testing.assert_allclose(np.abs(np.asarray(layer.eigenvalues())), 1.0, rtol=1e-5)
    assert layer.min_bytes_per_token(4) == (2 * H + 4 * P) * 4


def test_registry_and_choice_validation():
    assert get_model("dlinoss").layer is DLinOSS and get_model("linoss-im").options["discretization"] == "IM"
    assert get_model("linoss-imex").make_layer(H, P, rngs=nnx.Rngs(0)).discretization == "IMEX"
    with pytest.raises(UnknownChoiceError, match="IMEX1, IMEX2, IM, EX"):
        DLinOSS(H, P, rngs=nnx.Rngs(0), discretization="RK4")
    with pytest.raises(UnknownChoiceError, match="IM, IMEX"):
        LinOSS(H, P, rngs=nnx.Rngs(0), discretization="IMEX1")
    with pytest.raises(UnknownChoiceError, match="ring, uniform"):
        DLinOSS(H, P, rngs=nnx.Rngs(0), init="hippo")


# ------------------------------------------------------------------ stability: projection and guards

raw = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(raw, raw, raw), min_size=1, max_size=8))
def test_imex1_projection_keeps_eigenvalues_in_unit_disk(triples):
    with jax.enable_x64(True):
        A_raw, G_raw, dt_raw = (jnp.asarray(v, jnp.float64) for v in zip(*triples, strict=True))
        M, _ = _imex1(*_project_imex1(A_raw, G_raw, dt_raw))
        modulus = np.abs(np.asarray(block_eigenvalues(M)))
    assert np.all(np.isfinite(modulus)) and np.all(modulus <= 1 + 1e-6), modulus.max()


def test_imex2_refuses_init_with_dt_g_above_one():
    with pytest.raises(DiscretizationError, match="dt\\*G"):
        DLinOSS(H, P, rngs=nnx.Rngs(0), discretization="IMEX2", r_min=0.5, r_max=0.6)


def test_imex2_clamps_large_damping_and_never_returns_nan():
    layer = make("dlinoss-IMEX2", "chunked-toeplitz", jnp.float32)
    layer.G_diag[...] = jnp.full((P,), 1e4, jnp.float32)  # dt G >> 1: sqrt(1 - dt G) would be NaN
    u = jnp.ones((40, H), jnp.float32)
    with pytest.warns(UnstableDiscretizationWarning, match="clamped"):
        eager = layer(u)
    graph, state = nnx.split(layer)
    jitted, grads = jax.jit(jax.value_and_grad(lambda s: jnp.sum(nnx.merge(graph, s)(u) ** 2)))(state)
    assert np.all(np.isfinite(np.asarray(eager))) and np.isfinite(float(jitted))
    assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree_util.tree_leaves(grads))
    _, G, dt = layer.projected()
    assert np.all(np.asarray(dt * G) <= 1.0)


def test_ex_warns_when_initial_transition_is_unstable():
    # The ring init targets IMEX1; small rings give dt G > 4, where explicit Euler is unstable.
    with pytest.warns(UnstableDiscretizationWarning, match="EX"):
        layer = DLinOSS(H, P, rngs=nnx.Rngs(0), discretization="EX", r_min=0.3, r_max=0.35)
    assert np.abs(np.asarray(layer.eigenvalues())).max() > 1.0
    with pytest.warns(UnstableDiscretizationWarning, match="grow"):
        assert np.all(np.isfinite(np.asarray(layer(jnp.ones((3, H), jnp.float32)))))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the stable uniform init must not warn
        make("dlinoss-EX", "sequential", jnp.float32)
