"""Causal softmax attention: the quadratic-cost baseline the linear-time scans are compared with.

Symbols: H hidden width, h heads, d head width (d = state_dim, h = max(1, H // d)), L length.
softmax(Q K^T / sqrt(d) + causal mask) V per head, through ``jax.nn.dot_product_attention`` so the
platform's fused kernel is used where one exists (cuDNN flash attention on NVIDIA GPUs).
Precision: ``jax.nn.dot_product_attention`` computes the softmax in float32 whatever the input dtype,
so float64 attention matches a float64 reference to about 1e-7 relative, not to float64 precision.
"""

from __future__ import annotations

from typing import Unpack

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float

from dlbench.errors import DlbenchError
from dlbench.layers.base import AbstractSequenceLayer, LayerOptions
from dlbench.registry import register_model


@register_model("attention", description="causal softmax attention, quadratic in length")
class Attention(AbstractSequenceLayer):
    """Causal multi-head softmax attention with output projection and a D*u skip like the SSM layers.

    ``scan`` selects the attention implementation instead of a scan: "auto" lets JAX choose,
    "xla" forces the reference XLA lowering (materialises the (h, L, L) scores), "cudnn" the fused
    GPU kernel.
    """

    scans = ("auto", "xla", "cudnn")
    default_chunk_size = 0  # no chunked computation: the value is unused

    def __init__(self, hidden_dim: int, state_dim: int, *, rngs: nnx.Rngs, **common: Unpack[LayerOptions]):
        super().__init__(hidden_dim, state_dim, **common)
        if self.scan == "cudnn" and jax.default_backend() != "gpu":
            # Not this layer's failure: the platform lacks the kernel (a sweep records n/a, not error).
            raise DlbenchError(f"attention scan 'cudnn' needs an NVIDIA GPU; this platform is {jax.default_backend()}")
        self.head_dim = min(state_dim, hidden_dim)
        self.num_heads = max(1, hidden_dim // self.head_dim)
        width = self.num_heads * self.head_dim
        linear = dict(use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype, rngs=rngs)
        self.qkv = nnx.Linear(hidden_dim, 3 * width, **linear)
        self.out = nnx.Linear(width, hidden_dim, **linear)
        self.D = nnx.Param(jax.random.normal(rngs.params(), (hidden_dim,), self.param_dtype))

    def resolve_scan(self, seq_len: int) -> str:
        return self.scan

    def __call__(self, x: Float[Array, "*batch seq hidden"]) -> Float[Array, "*batch seq hidden"]:
        if x.ndim == 2:
            return self._forward_batched(x[None])[0]
        if x.ndim == 3:
            return self._forward_batched(x)
        raise ValueError(f"Attention expects (seq, hidden) or (batch, seq, hidden), got shape {x.shape}")

    def _forward(self, u: Float[Array, "seq hidden"]) -> Float[Array, "seq hidden"]:
        return self._forward_batched(u[None])[0]

    def _forward_batched(self, u: Float[Array, "batch seq hidden"]) -> Float[Array, "batch seq hidden"]:
        batch, length, _ = u.shape
        q, k, v = jnp.split(self.qkv(u.astype(self.dtype)), 3, axis=-1)
        shape = (batch, length, self.num_heads, self.head_dim)
        implementation = None if self.scan == "auto" else self.scan
        y = jax.nn.dot_product_attention(
            q.reshape(shape), k.reshape(shape), v.reshape(shape), is_causal=True, implementation=implementation
        )
        y = self.out(y.reshape(batch, length, -1))
        return (y + self.D[...] * u).astype(self.dtype)

    def min_bytes_per_token(self, dtype_bytes: int) -> int:
        """Input and output (2H) plus reading every earlier key and value once: 2 h d L / 2 on average.

        The last term grows with length, so this is reported at the call's length by the timing loop
        through :meth:`min_bytes_per_token_at`.
        """
        return 2 * self.hidden_dim * dtype_bytes

    def min_bytes_per_token_at(self, seq_len: int, dtype_bytes: int) -> int:
        width = self.num_heads * self.head_dim
        return (2 * self.hidden_dim + width * seq_len) * dtype_bytes
