"""``dlbench check``: does a registered layer keep the contract a fair benchmark relies on?

Each property is checked on small, awkwardly sized inputs (H = 7, P = 6, batch 3, length 1031: past
every built-in chunk and block size, not a multiple of any) and reported as one row:

| property | holds when |
|---|---|
| shape | (seq, hidden) -> (seq, hidden) and (batch, seq, hidden) -> (batch, seq, hidden) |
| batch independence | each sequence of a batch gives what it gives alone, and changing the other sequences does not change it (float64, within BATCH_RTOL) |
| causality | the output up to step t is bit-for-bit unchanged when every input after t changes, at several t |
| determinism | two calls on the same input give identical outputs |
| jit | the jitted call runs and agrees with the eager call (float64, within JIT_RTOL) |
| float64 | under x64 a float64 layer returns float64 carrying more than float32 precision |
| gradients | d(sum w * y) w.r.t. every parameter and the input is finite (float64) |
| scan backends | every declared backend agrees with "sequential": within F64_RTOL in float64, F32_RTOL in float32 (relative to max abs output); n/a when "sequential" is not declared |
| min bytes | ``min_bytes_per_token`` and ``min_bytes_per_token_at`` are positive integers |

A failing property never raises: its row says FAIL and why (the exception's type and message).
Checks run with ``jax_enable_x64`` on (float32 layers stay float32: dtypes are explicit).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

H, P, BATCH, LENGTH = 7, 6, 3, 1031
CAUSAL_STEPS = (0, 1, 16, 255, 256, 600, LENGTH - 2)
BATCH_RTOL = 1e-10
JIT_RTOL = 1e-10
F64_RTOL = 1e-9
# float32 backends against float32 sequential: reassociated sums of a recurrence whose float32 error
# docs/models.md measures at ~5e-3 of the output scale for D-LinOSS (ring init, A up to ~100) at L ~ 250.
F32_RTOL = 5e-3

PROPERTIES = ("shape", "batch independence", "causality", "determinism", "jit", "float64", "gradients",
              "scan backends", "min bytes")  # fmt: skip


@dataclasses.dataclass(frozen=True)
class PropertyResult:
    """One row of the report: PASS, FAIL or n/a, and a short detail."""

    model: str
    prop: str
    status: str
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.status == "FAIL"


class _Fail(Exception):
    """A property that does not hold (as opposed to one whose check crashed)."""


def _rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(float(np.max(np.abs(b))), 1e-30)
    return float(np.max(np.abs(a - b))) / scale


class _Subject:
    """Builds the model's layer at a given dtype/backend with one seed, and calls it."""

    def __init__(self, name: str):
        from dlbench.registry import get_model

        self.name = name
        self.spec = get_model(name)

        self._jitted: dict = {}

    def layer(self, dtype: str = "float64", scan: str = "auto"):
        import jax.numpy as jnp
        from flax import nnx

        dt = jnp.dtype(dtype)
        return self.spec.make_layer(H, P, rngs=nnx.Rngs(0), dtype=dt, param_dtype=dt, scan=scan)

    def apply(self, dtype: str = "float64", scan: str = "auto") -> Callable:
        """The layer's jitted call x -> y (one compilation per input shape); eager calls are slow."""
        key = (dtype, scan)
        if key not in self._jitted:
            import jax
            from flax import nnx

            graphdef, state = nnx.split(self.layer(dtype, scan))
            fn = jax.jit(lambda st, u: nnx.merge(graphdef, st)(u))
            self._jitted[key] = lambda u: fn(state, u)
        return self._jitted[key]

    @staticmethod
    def inputs(dtype: str = "float64", seed: int = 1, shape=(BATCH, LENGTH, H)):
        import jax
        import jax.numpy as jnp

        return jax.random.normal(jax.random.key(seed), shape, jnp.float64).astype(dtype)


def _shape(s: _Subject) -> str:
    layer = s.apply("float32")
    x3 = s.inputs("float32", shape=(BATCH, 17, H))
    y2, y3 = layer(x3[0]), layer(x3)
    if y2.shape != (17, H) or y3.shape != (BATCH, 17, H):
        raise _Fail(f"(17, {H}) -> {tuple(y2.shape)}, ({BATCH}, 17, {H}) -> {tuple(y3.shape)}")
    return f"(17, {H}) and ({BATCH}, 17, {H}) kept"


def _batch_independence(s: _Subject) -> str:
    import jax.numpy as jnp

    layer = s.apply("float64")
    x = s.inputs("float64", shape=(BATCH, 257, H))
    batched = np.asarray(layer(x))
    alone = np.asarray(layer(x[1]))
    other = np.asarray(layer(jnp.stack([x[0] * -3.0 + 1.0, x[1], x[2][::-1]]))[1])
    err = max(_rel_err(batched[1], alone), _rel_err(other, alone))
    if not err <= BATCH_RTOL:
        raise _Fail(f"sequence 1 of a batch differs from it alone by {err:.3g} (tolerance {BATCH_RTOL:g})")
    return f"max rel. diff {err:.2g}"


def _causality(s: _Subject) -> str:
    import jax.numpy as jnp

    layer = s.apply("float32")
    x = s.inputs("float32", shape=(LENGTH, H))
    y = np.asarray(layer(x))
    noise = s.inputs("float32", seed=7, shape=(LENGTH, H)) * 10.0
    bad = []
    for t in CAUSAL_STEPS:
        changed = jnp.where(jnp.arange(LENGTH)[:, None] > t, noise, x)
        y2 = np.asarray(layer(changed))
        if not np.array_equal(y[: t + 1], y2[: t + 1]):
            first = int(np.argmax(np.any(y[: t + 1] != y2[: t + 1], axis=-1)))
            bad.append(f"t={t} (step {first} changed)")
    if bad:
        raise _Fail("outputs depend on later inputs: " + ", ".join(bad))
    return f"exact at t in {{{', '.join(map(str, CAUSAL_STEPS))}}}"


def _determinism(s: _Subject) -> str:
    layer = s.apply("float32")
    x = s.inputs("float32", shape=(BATCH, 257, H))
    a, b = np.asarray(layer(x)), np.asarray(layer(x))
    if not np.array_equal(a, b):
        raise _Fail(f"two calls differ by up to {float(np.max(np.abs(a - b))):.3g}")
    return "two calls identical"


def _jit(s: _Subject) -> str:
    import jax
    from flax import nnx

    layer = s.layer("float64")
    x = s.inputs("float64", shape=(BATCH, 33, H))  # short: the eager call runs op by op
    graphdef, state = nnx.split(layer)
    jitted = jax.jit(lambda st, u: nnx.merge(graphdef, st)(u))
    y = np.asarray(jitted(state, x))
    err = _rel_err(y, layer(x))
    if not err <= JIT_RTOL:
        raise _Fail(f"jitted output differs from eager by {err:.3g} (tolerance {JIT_RTOL:g})")
    return f"max rel. diff to eager {err:.2g}"


def _float64(s: _Subject) -> str:
    layer = s.apply("float64")
    y = layer(s.inputs("float64", shape=(2, 257, H)))
    if str(y.dtype) != "float64":
        raise _Fail(f"float64 layer returned {y.dtype}")
    y = np.asarray(y)
    if np.array_equal(y, y.astype(np.float32).astype(np.float64)):
        raise _Fail("float64 output holds only float32 values (computed in float32)")
    return "float64 out, beyond float32 precision"


def _gradients(s: _Subject) -> str:
    import jax
    import jax.numpy as jnp
    from flax import nnx

    layer = s.layer("float64")
    x = s.inputs("float64", shape=(2, 257, H))
    w = s.inputs("float64", seed=3, shape=(2, 257, H))
    graphdef, params, rest = nnx.split(layer, nnx.Param, ...)

    def loss(p, u):
        return jnp.sum(nnx.merge(graphdef, p, rest)(u) * w)

    g_params, g_x = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)
    leaves = jax.tree_util.tree_leaves_with_path(g_params)
    bad = [jax.tree_util.keystr(path) for path, g in leaves if not bool(jnp.all(jnp.isfinite(g)))]
    if not bool(jnp.all(jnp.isfinite(g_x))):
        bad.append("input")
    if bad:
        raise _Fail("non-finite gradient w.r.t. " + ", ".join(bad))
    return f"finite w.r.t. {len(leaves)} parameter arrays and the input"


def _scan_backends(s: _Subject) -> str:
    scans = [b for b in s.spec.layer.scans if b != "sequential"]
    if "sequential" not in s.spec.layer.scans:
        return "n/a: no 'sequential' backend declared"
    worst = []
    bad = []
    for dtype, tol in (("float64", F64_RTOL), ("float32", F32_RTOL)):
        x = s.inputs(dtype, shape=(2, LENGTH, H))
        ref = np.asarray(s.apply(dtype, "sequential")(x))
        for backend in scans:
            err = _rel_err(s.apply(dtype, backend)(x), ref)
            worst.append(err)
            if not err <= tol:
                bad.append(f"{backend} ({dtype}): {err:.3g} > {tol:g}")
    if bad:
        raise _Fail("disagrees with sequential at L=" + f"{LENGTH}: " + "; ".join(bad))
    return f"{', '.join(scans)} vs sequential at L={LENGTH}: max rel. err {max(worst, default=0.0):.2g}"


def _min_bytes(s: _Subject) -> str:
    layer = s.layer("float32")
    values = [layer.min_bytes_per_token(4), layer.min_bytes_per_token(2), layer.min_bytes_per_token_at(LENGTH, 4)]
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in values):
        raise _Fail(f"min_bytes_per_token gave {values} (need positive integers)")
    return f"{values[0]} bytes/token (float32)"


_CHECKS: dict[str, Callable[[_Subject], str]] = {
    "shape": _shape,
    "batch independence": _batch_independence,
    "causality": _causality,
    "determinism": _determinism,
    "jit": _jit,
    "float64": _float64,
    "gradients": _gradients,
    "scan backends": _scan_backends,
    "min bytes": _min_bytes,
}


def check_model(name: str) -> list[PropertyResult]:
    """Every property for the registered model ``name``; never raises for the layer's own failures."""
    import warnings

    import jax

    jax.config.update("jax_enable_x64", True)
    subject = _Subject(name)  # an unknown name raises UnknownChoiceError (a user error)
    results = []
    for prop, check in _CHECKS.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                detail = check(subject)
            status = "n/a" if detail.startswith("n/a") else "PASS"
        except _Fail as failure:
            status, detail = "FAIL", str(failure)
        except Exception as error:  # the layer's own code crashed: that property fails
            status, detail = "FAIL", f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"
        results.append(PropertyResult(name, prop, status, detail))
    return results


def check_models(names: Sequence[str]) -> list[PropertyResult]:
    """:func:`check_model` for each name, in order."""
    return [r for name in names for r in check_model(name)]


def report_table(results: Sequence[PropertyResult]):
    """A rich table: model, property, result, detail."""
    from rich.table import Table

    table = Table(title="dlbench check", show_lines=False)
    for column in ("model", "property", "result", "detail"):
        table.add_column(column, overflow="fold")
    styles = {"PASS": "green", "FAIL": "bold red", "n/a": "dim"}
    for r in results:
        table.add_row(r.model, r.prop, f"[{styles[r.status]}]{r.status}[/]", r.detail)
    return table


def failures(results: Sequence[PropertyResult]) -> list[str]:
    """``"MODEL: PROPERTY"`` for every failed property."""
    return [f"{r.model}: {r.prop}" for r in results if r.failed]
