"""The shared network that wraps any registered sequence layer (docs/models.md section 1).

    x = W_enc u + b_enc
    repeat num_blocks: s = x; x = Norm(x); x = Layer(x); x = Dropout(GELU(x)); x = GLU(x); x = s + Dropout(x)
    classification: logits = W_dec mean_t(x) + b_dec
    regression:      act(W_dec x_k + b_dec) at k = s-1, 2s-1, ...  (act = tanh in the papers)

Only the sequence layer differs between models, so every comparison runs the same network. This
module knows no concrete layer: it builds them through the registry (importing :mod:`dlbench.layers`
registers the built-ins).

Norms (``norm=``), all over (batch, time) per channel, no affine part, eps = 1e-5, momentum m = 0.99:

- "batch": flax ``nnx.BatchNorm``. Training: batch statistics; running averages start at mean 0,
  var 1 and move by r <- m r + (1 - m) batch; eval: the running averages as they are.
- "batch-ema": the LinOSS authors' block (equinox ``BatchNorm`` created without ``mode``, i.e. the
  legacy "ema" mode). Training call n = 1: running := batch statistics, normalise with them; call
  n >= 2: running := m running + (1 - m) batch, and normalise with that updated running mix (so from
  the second call on a batch is normalised mostly by earlier batches' statistics). Eval: running.
- "batch-debiased": the D-LinOSS authors' block (equinox ``mode="batch"``). Training: normalise with
  batch statistics; hidden h <- m h + (1 - m) batch from h_0 = (mean 0, var 1), n <- n + 1. Eval:
  h / (1 - m^n) (zero-debiased; the initial var 1 is divided along, as equinox does), h itself while
  n = 0.
Batch variance is the biased one, mean((x - mean)^2), as in both libraries. These semantics were
established from equinox's documentation and behaviour (not its code) and are pinned by
tests/test_norms.py against a NumPy reference.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Bool, Float

import dlbench.layers  # noqa: F401  (registers the built-in models)
from dlbench.config import ModelConfig
from dlbench.errors import check_choice
from dlbench.layers.base import AbstractSequenceLayer
from dlbench.layers.kernels.init import fan_in_uniform
from dlbench.registry import get_model

NORM_MOMENTUM = 0.99  # equinox's and flax's default, used by both authors' code
NORM_EPS = 1e-5
OUTPUT_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {"tanh": jnp.tanh, "identity": lambda x: x}


class AuthorsBatchNorm(nnx.Module):
    """The LinOSS ("ema") or D-LinOSS ("debiased") authors' BatchNorm; semantics in the module docstring.

    State (``nnx.BatchStat``, so the training loop carries it like flax's): ``mean`` and ``var`` (H,)
    (the running statistics for "ema", the hidden, not yet debiased ones for "debiased") and
    ``count`` () the number of training calls so far. 2H + 1 values, as the papers count them.
    ``use_running_average`` is toggled by ``model.train()`` / ``model.eval()``.
    """

    def __init__(self, features: int, *, mode: str, param_dtype, momentum: float = NORM_MOMENTUM, eps: float = NORM_EPS):
        check_choice("authors' BatchNorm mode", mode, ("ema", "debiased"))
        self.mode = mode
        self.momentum = momentum
        self.eps = eps
        self.use_running_average = False
        self.mean = nnx.BatchStat(jnp.zeros((features,), param_dtype))
        self.var = nnx.BatchStat(jnp.ones((features,), param_dtype))
        self.count = nnx.BatchStat(jnp.zeros((), param_dtype))

    def _batch_stats(self, x, mask):
        axes = tuple(range(x.ndim - 1))
        if mask is None:
            mean = x.mean(axes)
            var = ((x - mean) ** 2).mean(axes)
        else:
            w = mask.astype(x.dtype)
            total = jnp.maximum(w.sum(axes), 1.0)
            mean = (x * w).sum(axes) / total
            var = (w * (x - mean) ** 2).sum(axes) / total
        return mean, jnp.maximum(var, 0.0)

    def __call__(self, x: Float[Array, "*batch seq hidden"], mask: Bool[Array, "*batch seq 1"] | None = None):
        m = self.momentum
        count = self.count[...]
        stat_dtype = self.mean[...].dtype
        if self.use_running_average:
            mean, var = self.mean[...], self.var[...]
            if self.mode == "debiased":
                scale = jnp.where(count == 0, 1.0, 1.0 - m**count)
                mean, var = mean / scale, var / scale
        else:
            batch_mean, batch_var = self._batch_stats(x.astype(stat_dtype), mask)
            mixed_mean = m * self.mean[...] + (1.0 - m) * batch_mean
            mixed_var = m * self.var[...] + (1.0 - m) * batch_var
            if self.mode == "ema":
                first = count == 0
                mean = jnp.where(first, batch_mean, mixed_mean)
                var = jnp.where(first, batch_var, mixed_var)
                self.mean[...], self.var[...] = mean, var
            else:
                mean, var = batch_mean, batch_var
                self.mean[...], self.var[...] = mixed_mean, mixed_var
            self.count[...] = count + 1
        out = (x - mean.astype(x.dtype)) / jnp.sqrt(var.astype(x.dtype) + self.eps)
        return out.astype(x.dtype)


def linear(in_features: int, out_features: int, *, rngs: nnx.Rngs, dtype, param_dtype) -> nnx.Linear:
    init = fan_in_uniform(in_features)
    return nnx.Linear(
        in_features, out_features, kernel_init=init, bias_init=init, dtype=dtype, param_dtype=param_dtype, rngs=rngs
    )


def dense(layer: nnx.Linear, x: Float[Array, "*lead features"]) -> Float[Array, "*lead out"]:
    """``layer(x)`` with the leading axes folded into one: the same product, as a 2-D GEMM.

    XLA:CPU hands 2-D dots to its fast GEMM kernels but not 3-D ones: at the EigenWorms widths,
    (4, 4096, 128) inputs, a GLU's forward and backward pass took 51 ms with (batch, seq, hidden)
    operands against 26 ms with (batch * seq, hidden), measured side by side.
    """
    rows = math.prod(x.shape[:-1])  # not -1: a zero-size axis (an empty readout) has no inferable width
    return layer(x.reshape(rows, x.shape[-1])).reshape(*x.shape[:-1], layer.out_features)


class Dropout(nnx.Dropout):
    """flax's Dropout (the same Bernoulli(1 - rate) masks, scaled by 1 / (1 - rate)), its random bits
    drawn on CPU with threefry's original layout (``jax.threefry_partitionable(False)``).

    JAX's default, partitionable layout spends one threefry block per mask element instead of one per
    two; on CPU that made the masks 19% of a LinOSS-IM training step at the EigenWorms widths (a mask of
    (4, 4096, 128): 30.8 ms against 15.8 ms with its gradient). The masks are a function of the seed
    and the step either way, whatever the sharding; accelerators keep the partitionable layout, which
    needs no communication when the batch is split over devices.
    """

    def __call__(self, x, *args, **kwargs):
        with jax.threefry_partitionable(jax.default_backend() != "cpu"):
            return super().__call__(x, *args, **kwargs)


class Block(nnx.Module):
    """Pre-norm residual block: Norm -> sequence layer -> GELU -> dropout -> GLU -> dropout -> + skip."""

    def __init__(self, layer: AbstractSequenceLayer, *, norm: str, dropout: float, rngs: nnx.Rngs, dtype, param_dtype):
        hidden = layer.hidden_dim
        if norm == "batch":
            # The papers' BatchNorm: statistics over (batch, time), no affine part.
            self.norm = nnx.BatchNorm(hidden, use_bias=False, use_scale=False, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
            # Flax keeps running statistics in float32 whatever param_dtype is; a float64 model must
            # normalise in float64 in eval mode too.
            self.norm.mean = nnx.BatchStat(jnp.zeros((hidden,), param_dtype))
            self.norm.var = nnx.BatchStat(jnp.ones((hidden,), param_dtype))
        elif norm == "batch-ema":
            self.norm = AuthorsBatchNorm(hidden, mode="ema", param_dtype=param_dtype)
        elif norm == "batch-debiased":
            self.norm = AuthorsBatchNorm(hidden, mode="debiased", param_dtype=param_dtype)
        else:
            self.norm = nnx.LayerNorm(hidden, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.layer = layer
        self.glu_value = linear(hidden, hidden, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.glu_gate = linear(hidden, hidden, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.dropout = Dropout(dropout, rngs=rngs)

    def __call__(self, x: Float[Array, "batch seq hidden"], mask: Bool[Array, "batch seq"] | None) -> Float[Array, "batch seq hidden"]:
        skip = x
        if isinstance(self.norm, (nnx.BatchNorm, AuthorsBatchNorm)):
            x = self.norm(x, mask=None if mask is None else mask[..., None])
        else:
            x = self.norm(x)
        x = self.layer(x)
        x = self.dropout(jax.nn.gelu(x, approximate=True))
        x = dense(self.glu_value, x) * jax.nn.sigmoid(dense(self.glu_gate, x))
        return skip + self.dropout(x)


class SequenceModel(nnx.Module):
    """Encoder, ``num_blocks`` residual blocks around a sequence layer, and a head.

    Args:
      make_layer: builds one block's sequence layer from ``rngs``.
      config: the backbone (:class:`ModelConfig`, validated there): its sizes, ``head``, ``norm``,
        ``dropout`` and the output fields; ``scan`` and ``layer_options`` are ``make_layer``'s.
        The norms: "batch" (flax BatchNorm), "layer", "batch-ema" (the LinOSS authors' BatchNorm) or
        "batch-debiased" (the D-LinOSS authors'), see the module docstring. The regression head reads
        the steps s-1, 2s-1, ... for ``output_step`` s (PPG-DaLiA: s = 128), or with ``output_last`` > 0
        the last that many steps (forecasting: the model reads L_in observed steps followed by L_out
        placeholder steps and predicts at the last L_out).
      rngs, dtype, param_dtype: initialisation, computation and parameter dtypes.
    """

    def __init__(
        self,
        make_layer: Callable[[nnx.Rngs], AbstractSequenceLayer],
        config: ModelConfig,
        *,
        rngs: nnx.Rngs,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
    ):
        self.head = config.head
        self.output_step = config.output_step
        self.output_activation = config.output_activation
        self.output_last = config.output_last
        self.dtype = dtype
        common = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.encoder = linear(config.num_inputs, config.hidden_dim, **common)
        self.blocks = nnx.List(
            [
                Block(make_layer(rngs), norm=config.norm, dropout=config.dropout, **common)
                for _ in range(config.num_blocks)
            ]
        )
        self.decoder = linear(config.hidden_dim, config.num_outputs, **common)

    def __call__(
        self, u: Float[Array, "batch seq inputs"], mask: Bool[Array, "batch seq"] | None = None
    ) -> Float[Array, "batch outputs"] | Float[Array, "batch steps outputs"]:
        """Logits (batch, classes) or per-step predictions (batch, seq // output_step, outputs).

        ``mask`` marks the valid steps of padded sequences; padding sits at the end, so the causal
        layers never let it reach a valid step, and pooling and BatchNorm statistics skip it.
        """
        x = dense(self.encoder, u.astype(self.dtype))
        for block in self.blocks:
            x = block(x, mask)
        if self.head == "classification":
            if mask is None:
                pooled = x.mean(axis=1)
            else:
                weights = mask[..., None].astype(x.dtype)
                pooled = (x * weights).sum(axis=1) / jnp.maximum(weights.sum(axis=1), 1.0)
            return self.decoder(pooled)
        readout = x[:, -self.output_last :] if self.output_last else x[:, self.output_step - 1 :: self.output_step]
        return OUTPUT_ACTIVATIONS[self.output_activation](dense(self.decoder, readout))


def build_model(name: str, config: ModelConfig | None = None, *, seed: int = 0, dtype=jnp.float32, param_dtype=None) -> SequenceModel:
    """The registered model ``name`` in the shared backbone (default :class:`ModelConfig`), initialised from ``seed``."""
    config = ModelConfig() if config is None else config
    spec = get_model(name)
    param_dtype = dtype if param_dtype is None else param_dtype
    if jnp.dtype(param_dtype) == jnp.bfloat16:
        param_dtype = jnp.float32

    def make_layer(rngs: nnx.Rngs) -> AbstractSequenceLayer:
        return spec.make_layer(
            config.hidden_dim,
            config.state_dim,
            rngs=rngs,
            dtype=dtype,
            param_dtype=param_dtype,
            scan=config.scan,
            **config.layer_options,
        )

    return SequenceModel(
        make_layer, config, rngs=nnx.Rngs(params=seed, dropout=seed + 1), dtype=dtype, param_dtype=param_dtype
    )


def count_parameters(model: nnx.Module) -> int:
    """Parameter count as the papers report it.

    Trainable parameters plus BatchNorm running statistics, plus one per BatchNorm layer (the
    papers' equinox BatchNorm keeps a first-call flag in its state and counts it).
    """
    params = nnx.state(model, nnx.Param)
    stats = nnx.state(model, nnx.BatchStat)
    total = sum(x.size for x in jax.tree_util.tree_leaves(params))
    total += sum(x.size for x in jax.tree_util.tree_leaves(stats))
    total += sum(1 for _, m in nnx.iter_modules(model) if isinstance(m, nnx.BatchNorm))
    return int(total)
