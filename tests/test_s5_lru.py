"""S5 and LRU against literal float64 NumPy references (docs/models.md sections 3, 4 and 6).

Every backend of every layer option is checked against a Python loop over time that implements the
equations from the raw parameters, outputs at awkward lengths and gradients by central finite
differences. Dimensions are distinct (batch 3, H 7, P 5 or 10) so a swapped axis cannot hide.
float64 is switched on only inside these tests (``jax.enable_x64``), never globally.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from gradcheck import directional_derivatives

from dlbench.errors import UnknownChoiceError
from dlbench.layers.base import SSMParam
from dlbench.layers.lru import LRU
from dlbench.layers.s5 import S5, hippo_n
from dlbench.registry import get_model

BATCH, H = 3, 7
LENGTHS = (1, 2, 17, 257, 1031)
BACKENDS = ("associative", "sequential", "chunked", "auto")
CHUNK = 8  # small, so 17 and 257 steps cross chunk boundaries and leave a ragged last chunk

# (class, state_dim, options). The four S5 rows are a pairwise covering of discretisation x conj_sym
# x blocks; P (the stored state) is 5 or 10, never 3 or 7.
MAIN = {
    "s5-zoh-conj-b1": (S5, 10, dict(discretization="zoh", conj_sym=True, blocks=1)),
    "lru": (LRU, 5, {}),
}
OTHER = {
    "s5-bilinear-conj-b2": (S5, 20, dict(discretization="bilinear", conj_sym=True, blocks=2)),
    "s5-zoh-full-b2": (S5, 10, dict(discretization="zoh", conj_sym=False, blocks=2)),
    "s5-bilinear-full-b1": (S5, 5, dict(discretization="bilinear", conj_sym=False, blocks=1)),
    # Eigenvalues within 1e-4 of the unit circle: the long-memory regime where scans drift apart.
    "lru-ring": (LRU, 5, dict(r_min=0.999, r_max=0.9999, max_phase=0.314)),
}
CONFIGS = {**MAIN, **OTHER}

# float32 backends reorder the same sums, so they agree only to rounding: the associative scan's error
# grows like eps log2(L), the sequential one's like eps times the memory length of the slowest mode.
# Measured on CPU: <= 2e-7 of max|y| even at L = 50,000 (H 64, state 64). 1e-5 leaves 50x headroom;
# a wrong carry across chunks or a wrong combine order shows up at O(1).
FLOAT32_BACKEND_RTOL = 1e-5


# ---------------------------------------------------------------------------------------------------
# References: docs/models.md equations, literally, in float64 NumPy.


def s5_reference(p: dict, u: np.ndarray, *, conj_sym: bool, discretization: str) -> np.ndarray:
    lam = np.minimum(p["Lambda_re"], -1e-4) + 1j * p["Lambda_im"]
    step = np.exp(p["log_step"])
    b_tilde = p["B"][..., 0] + 1j * p["B"][..., 1]
    c_tilde = p["C"][..., 0] + 1j * p["C"][..., 1]
    if discretization == "zoh":
        lam_bar = np.exp(lam * step)
        b_bar = ((lam_bar - 1) / lam)[:, None] * b_tilde
    else:
        lam_bar = (1 + step * lam / 2) / (1 - step * lam / 2)
        b_bar = (step / (1 - step * lam / 2))[:, None] * b_tilde
    factor = 2.0 if conj_sym else 1.0
    x = np.zeros(u.shape[:1] + lam.shape, complex)
    ys = []
    for k in range(u.shape[1]):
        x = lam_bar * x + u[:, k] @ b_bar.T
        ys.append(factor * (x @ c_tilde.T).real + p["D"] * u[:, k])
    return np.stack(ys, axis=1)


def lru_reference(p: dict, u: np.ndarray) -> np.ndarray:
    lam = np.exp(-np.exp(p["nu_log"]) + 1j * np.exp(p["theta_log"]))
    gamma = np.exp(p["gamma_log"])
    b = p["B_re"] + 1j * p["B_im"]
    c = p["C_re"] + 1j * p["C_im"]
    x = np.zeros(u.shape[:1] + lam.shape, complex)
    ys = []
    for k in range(u.shape[1]):
        x = lam * x + gamma * (u[:, k] @ b.T)
        ys.append((x @ c.T).real + p["D"] * u[:, k])
    return np.stack(ys, axis=1)


def reference(cls, options: dict, p: dict, u: np.ndarray) -> np.ndarray:
    if cls is S5:
        return s5_reference(
            p, u, conj_sym=options.get("conj_sym", True), discretization=options.get("discretization", "zoh")
        )
    return lru_reference(p, u)


# ---------------------------------------------------------------------------------------------------
# Helpers


def make(name: str, *, backend: str = "auto", dtype=jnp.float64, seed: int = 0):
    cls, state_dim, options = CONFIGS[name]
    layer = cls(
        H, state_dim, rngs=nnx.Rngs(seed), dtype=dtype, param_dtype=dtype, scan=backend, chunk_size=CHUNK, **options
    )
    return cls, options, layer


def raw_params(layer) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in nnx.to_pure_dict(nnx.state(layer, nnx.Param)).items()}


# XLA's CPU backend optimisation (LLVM) is most of the compile time of these small programs and
# buys nothing at test sizes; the HLO passes that decide the numerics still run.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def run_compiled(fn, *args):
    """fn(*args), jit-compiled with FAST_COMPILE (one compile per call: shapes differ anyway)."""
    return jax.jit(fn).lower(*args).compile(FAST_COMPILE)(*args)


def jitted_forward(layer):
    graphdef, state = nnx.split(layer)
    return (lambda s, u: run_compiled(lambda s, u: nnx.merge(graphdef, s)(u), s, u)), state


def inputs(length: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((BATCH, length, H))


def forward_cases():
    for name in MAIN:
        for backend in BACKENDS[:3]:
            yield pytest.param(name, backend, LENGTHS, id=f"{name}-{backend}")
        # "auto" resolves to one of the three above; check the call path at a short and a long length.
        yield pytest.param(name, "auto", (2, 257), id=f"{name}-auto")
    for name in OTHER:
        for backend in BACKENDS[:3]:
            yield pytest.param(name, backend, (17, 257), id=f"{name}-{backend}")


# ---------------------------------------------------------------------------------------------------
# Outputs and gradients against the references


@pytest.mark.parametrize("name,backend,lengths", list(forward_cases()))
def test_forward_matches_float64_reference(name, backend, lengths):
    with jax.enable_x64(True):
        cls, options, layer = make(name, backend=backend)
        forward, state = jitted_forward(layer)
        p = raw_params(layer)
        for length in lengths:
            u = inputs(length)
            y = forward(state, jnp.asarray(u))
            assert y.dtype == jnp.float64 and y.shape == u.shape
            want = reference(cls, options, p, u)
            atol = 1e-9 * np.abs(want).max()
            np.testing.assert_allclose(np.asarray(y), want, rtol=1e-9, atol=atol, err_msg=f"L={length}")


def grad_cases():
    # The default S5 and LRU on every backend at every length: 1 and 2 (no recurrence, or a single
    # step of it), 17 and 257 (cross chunk boundaries, a ragged last chunk), 1031 (long memory).
    for name in MAIN:
        for backend in BACKENDS[:3]:
            for length in LENGTHS:
                yield pytest.param(name, backend, length, id=f"{name}-{backend}-L{length}")
    for name in OTHER:
        yield pytest.param(name, "chunked", 17, id=f"{name}-chunked")


@pytest.mark.parametrize("name,backend,length", list(grad_cases()))
def test_gradients_match_finite_differences(name, backend, length):
    """d/dt loss(theta + t v) at t=0 for loss = sum(y * W), over every raw parameter and the input."""
    with jax.enable_x64(True):
        cls, options, layer = make(name, backend=backend)
        graphdef, state = nnx.split(layer)
        rng = np.random.default_rng(2)
        u = inputs(length)
        w = rng.standard_normal(u.shape)

        def loss(s, u):
            return jnp.sum(nnx.merge(graphdef, s)(u) * w)

        g_state, g_u = run_compiled(jax.grad(loss, argnums=(0, 1)), state, jnp.asarray(u))
        grads = {k: np.asarray(v) for k, v in nnx.to_pure_dict(g_state).items()}
        p = raw_params(layer)
        assert set(grads) == set(p)

        def ref_loss(at):
            return np.sum(reference(cls, options, at["params"], at["u"]) * w)

        # Unit directions: central differences are then within O(eps^2) truncation plus
        # ~1e-16 |loss| / eps rounding of the gradient's norm.
        scale = np.sqrt(sum(np.sum(g**2) for g in grads.values()) + np.sum(np.asarray(g_u) ** 2))
        point, gradient = {"params": p, "u": u}, {"params": grads, "u": g_u}
        for ad, fd in directional_derivatives(ref_loss, point, gradient, rng, directions=3, unit=True):
            assert abs(ad - fd) <= 1e-6 * scale, (ad, fd, scale)


def test_float32_backends_agree():
    length = 257
    u = jnp.asarray(inputs(length), jnp.float32)
    for name in MAIN:
        outputs = {}
        for backend in BACKENDS[:3]:
            _, _, layer = make(name, backend=backend, dtype=jnp.float32)
            forward, state = jitted_forward(layer)
            outputs[backend] = np.asarray(forward(state, u))
            assert outputs[backend].dtype == np.float32
        scale = np.abs(outputs["sequential"]).max()
        for backend in ("associative", "chunked"):
            np.testing.assert_allclose(
                outputs[backend],
                outputs["sequential"],
                rtol=0,
                atol=FLOAT32_BACKEND_RTOL * scale,
                err_msg=f"{name} {backend}",
            )


@pytest.mark.parametrize("name", list(MAIN))
def test_batched_equals_per_sequence(name):
    with jax.enable_x64(True):
        _, _, layer = make(name, backend="sequential")
        forward, state = jitted_forward(layer)
        u = jnp.asarray(inputs(17))
        batched = np.asarray(forward(state, u))
        for i in range(BATCH):
            # vmap changes the matmul shapes, so only rounding may differ.
            np.testing.assert_allclose(np.asarray(forward(state, u[i])), batched[i], rtol=1e-13, atol=1e-13)


def test_bfloat16_is_honoured():
    for name in MAIN:
        _, _, layer = make(name, backend="sequential", dtype=jnp.bfloat16)
        y = layer(jnp.ones((2, H), jnp.bfloat16))
        assert y.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(y, np.float32)))
        assert all(np.asarray(v).dtype == jnp.bfloat16 for v in nnx.to_pure_dict(nnx.state(layer)).values())


# ---------------------------------------------------------------------------------------------------
# Parameters and initialisation


S5_SHAPES = {
    "Lambda_re": ("P",), "Lambda_im": ("P",), "B": ("P", "H", 2), "C": ("H", "P", 2), "D": ("H",), "log_step": ("P",),
}  # fmt: skip
LRU_SHAPES = {
    "nu_log": ("N",), "theta_log": ("N",), "gamma_log": ("N",), "B_re": ("N", "H"), "B_im": ("N", "H"),
    "C_re": ("H", "N"), "C_im": ("H", "N"), "D": ("H",),
}  # fmt: skip


@pytest.mark.parametrize("conj_sym,P", [(True, 5), (False, 10)])
def test_s5_parameter_names_shapes_and_types(conj_sym, P):
    layer = S5(H, 10, rngs=nnx.Rngs(0), conj_sym=conj_sym)
    sizes = {"P": P, "H": H}
    shapes = {k: tuple(v.shape) for k, v in nnx.to_pure_dict(nnx.state(layer, nnx.Param)).items()}
    assert shapes == {k: tuple(sizes.get(d, d) for d in dims) for k, dims in S5_SHAPES.items()}
    assert set(nnx.to_pure_dict(nnx.state(layer, SSMParam))) == {"Lambda_re", "Lambda_im", "B", "log_step"}


def test_lru_parameter_names_shapes_and_types():
    layer = LRU(H, 5, rngs=nnx.Rngs(0))
    sizes = {"N": 5, "H": H}
    shapes = {k: tuple(v.shape) for k, v in nnx.to_pure_dict(nnx.state(layer, nnx.Param)).items()}
    assert shapes == {k: tuple(sizes.get(d, d) for d in dims) for k, dims in LRU_SHAPES.items()}
    assert set(nnx.to_pure_dict(nnx.state(layer, SSMParam))) == {"nu_log", "theta_log", "gamma_log", "B_re", "B_im"}


def test_hippo_n_eigendecomposition():
    n = 12
    lam, v = hippo_n(n)
    m = np.arange(n)
    q, p = np.sqrt(2 * m + 1), np.sqrt(m + 0.5)
    s = -(np.tril(np.outer(q, q)) - np.diag(m)) + np.outer(p, p)
    np.testing.assert_allclose(lam.real, -0.5, atol=1e-12)
    np.testing.assert_allclose(v @ np.diag(lam) @ v.conj().T, s, atol=1e-10)
    # The first half holds one eigenvalue of each conjugate pair.
    np.testing.assert_allclose(np.sort(lam[n // 2 :].imag), np.sort(-lam[: n // 2].imag), atol=1e-10)


@pytest.mark.parametrize("conj_sym,blocks", [(True, 1), (True, 2), (False, 2)])
def test_s5_init_is_hippo_n_in_the_eigenbasis(conj_sym, blocks):
    ssm_size = 12
    with jax.enable_x64(True):
        f64 = dict(dtype=jnp.float64, param_dtype=jnp.float64)
        layer = S5(H, ssm_size, rngs=nnx.Rngs(3), conj_sym=conj_sym, blocks=blocks, **f64)
        p = raw_params(layer)
    block = ssm_size // blocks
    lam_block, v = hippo_n(block)
    kept = block // 2 if conj_sym else block
    # Before discretisation every HiPPO-N eigenvalue has real part exactly -1/2.
    np.testing.assert_allclose(p["Lambda_re"], -0.5, atol=1e-12)
    np.testing.assert_allclose(p["Lambda_im"], np.tile(lam_block[:kept].imag, blocks), atol=1e-12)
    np.testing.assert_array_less(np.exp(p["log_step"]), 1e-1 + 1e-12)
    np.testing.assert_array_less(1e-3 - 1e-12, np.exp(p["log_step"]))
    if not conj_sym:
        # B~ = V^-1 B with real B (per block): rotating back must give a real matrix. (C is complex
        # before the rotation too, so C~ = C V has no such check; its scale is tested below.)
        b_tilde = (p["B"][..., 0] + 1j * p["B"][..., 1]).reshape(blocks, block, H)
        b = np.einsum("pq,kqh->kph", v, b_tilde)
        assert np.abs(b.imag).max() < 1e-12 < np.abs(b.real).max()


def test_s5_init_scales():
    # lecun-normal on (ssm_size, H) has fan_in ssm_size (jax's axis -2, as in the S5 code); C's
    # real and imaginary parts are lecun-normal with fan_in ssm_size; D ~ N(0, 1).
    ssm_size, h = 64, 97
    layer = S5(h, ssm_size, rngs=nnx.Rngs(0), conj_sym=False)
    p = raw_params(layer)
    lam, v = hippo_n(ssm_size)
    b = v @ (p["B"][..., 0] + 1j * p["B"][..., 1])
    c = (p["C"][..., 0] + 1j * p["C"][..., 1]) @ v.conj().T
    assert np.std(b.real) == pytest.approx(1 / np.sqrt(ssm_size), rel=0.1)
    assert np.std(c.real) == pytest.approx(1 / np.sqrt(ssm_size), rel=0.1)
    assert np.std(c.imag) == pytest.approx(1 / np.sqrt(ssm_size), rel=0.1)
    assert np.std(p["D"]) == pytest.approx(1.0, rel=0.2)  # 97 samples: the std's own error is ~7%


def test_lru_init_ring_phase_and_normalisation():
    n, r_min, r_max, max_phase = 2003, 0.4, 0.9, 3.0
    with jax.enable_x64(True):
        f64 = dict(dtype=jnp.float64, param_dtype=jnp.float64)
        layer = LRU(H, n, rngs=nnx.Rngs(0), r_min=r_min, r_max=r_max, max_phase=max_phase, **f64)
        p = raw_params(layer)
    mag = np.exp(-np.exp(p["nu_log"]))
    theta = np.exp(p["theta_log"])
    assert r_min <= mag.min() and mag.max() <= r_max
    assert 0 < theta.min() and theta.max() <= max_phase
    # Uniform in area: |Lambda|^2 is uniform on [r_min^2, r_max^2] (mean and variance within 5 sigma-ish).
    mag2 = (mag**2 - r_min**2) / (r_max**2 - r_min**2)
    assert abs(mag2.mean() - 0.5) < 0.03 and abs(mag2.var() - 1 / 12) < 0.01
    np.testing.assert_allclose(np.exp(p["gamma_log"]), np.sqrt(1 - mag**2), rtol=1e-12)
    assert np.std(p["B_re"]) == pytest.approx(1 / np.sqrt(2 * H), rel=0.1)
    assert np.std(p["C_im"]) == pytest.approx(1 / np.sqrt(n), rel=0.1)
    # Default ring [0, 1]: every eigenvalue strictly inside the unit disk, all parameters finite.
    layer = LRU(H, 1009, rngs=nnx.Rngs(1))
    mag = np.abs(np.asarray(layer.eigenvalues()))
    assert mag.max() < 1 and all(np.isfinite(a).all() for a in raw_params(layer).values())


# ---------------------------------------------------------------------------------------------------
# Options, errors, registry


@pytest.mark.parametrize(
    "build,valid",
    [
        (lambda: S5(H, 10, rngs=nnx.Rngs(0), scan="fast"), ("associative", "sequential", "chunked", "auto")),
        (lambda: S5(H, 10, rngs=nnx.Rngs(0), discretization="euler"), ("zoh", "bilinear")),
        (lambda: LRU(H, 5, rngs=nnx.Rngs(0), scan="fast"), ("associative", "sequential", "chunked", "auto")),
    ],
)
def test_bad_choice_names_valid_choices(build, valid):
    with pytest.raises(UnknownChoiceError) as info:
        build()
    assert all(v in str(info.value) for v in valid)


@pytest.mark.parametrize(
    "build,fragment",
    [
        (lambda: S5(H, 10, rngs=nnx.Rngs(0), blocks=2), "divisible by 4"),
        (lambda: S5(H, 9, rngs=nnx.Rngs(0)), "divisible by 2"),
        (lambda: S5(H, 10, rngs=nnx.Rngs(0), conj_sym=False, blocks=3), "divisible by 3"),
        (lambda: S5(H, 10, rngs=nnx.Rngs(0), blocks=0), "blocks"),
        (lambda: S5(H, 10, rngs=nnx.Rngs(0), dt_min=0.2, dt_max=0.1), "dt_min"),
        (lambda: LRU(H, 5, rngs=nnx.Rngs(0), r_max=1.5), "r_max"),
        (lambda: LRU(H, 5, rngs=nnx.Rngs(0), r_min=0.9, r_max=0.5), "r_min"),
        (lambda: LRU(H, 5, rngs=nnx.Rngs(0), max_phase=0.0), "max_phase"),
    ],
)
def test_bad_values_raise_one_line_errors(build, fragment):
    with pytest.raises(ValueError, match=fragment) as info:
        build()
    assert "\n" not in str(info.value)


def test_registered_and_min_bytes():
    assert get_model("s5").layer is S5 and get_model("lru").layer is LRU
    s5 = get_model("s5").make_layer(H, 10, rngs=nnx.Rngs(0))
    lru = get_model("lru").make_layer(H, 5, rngs=nnx.Rngs(0))
    assert s5.min_bytes_per_token(4) == 2 * H * 4 + 2 * 5 * 4  # P = 5 complex states with conj_sym
    assert lru.min_bytes_per_token(2) == 2 * H * 2 + 2 * 5 * 4  # the state is at least float32
