"""The one contract every sequence layer implements.

A sequence layer maps (seq, hidden) or (batch, seq, hidden) to the same shape. Concrete layers are
final: they subclass :class:`AbstractSequenceLayer`, implement ``_forward`` on one (seq, hidden)
sequence, and are never subclassed themselves.

Parameters that the papers train with their own learning rate (the SSM's dynamics) are stored as
:class:`SSMParam`, a subtype of ``nnx.Param``; the training loop turns that type into an optax
partition, so no loop ever matches parameter names.
"""

from __future__ import annotations

import abc
from typing import ClassVar, TypedDict

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike
from jaxtyping import Array, Float

from dlbench.errors import check_choice
from dlbench.layers.kernels.dtypes import complex_dtype, scan_dtype
from dlbench.layers.kernels.scan import BACKENDS, DEFAULT_CHUNK_SIZE

# The generic backends (:func:`dlbench.layers.kernels.scan.fused_scan`) plus "auto": what a layer whose
# recurrence goes through the shared scan primitives offers.
SCAN_CHOICES = BACKENDS + ("auto",)

__all__ = ["SCAN_CHOICES", "AbstractSequenceLayer", "LayerOptions", "SSMParam", "auto_backend", "complex_dtype", "scan_dtype"]


class SSMParam(nnx.Param):
    """A parameter of the state-space dynamics (eigenvalues, step sizes, input/output maps)."""


def auto_backend(platform: str, seq_len: int) -> str:
    """The generic backend ``scan="auto"`` resolves to, for layers without a ``preferred`` entry.

    The rule comes from ``dlbench profile scan`` measurements (see README, "Choosing a backend").
    """
    if platform == "cpu":
        return "sequential"
    return "associative" if seq_len <= 1 << 17 else "chunked"


class LayerOptions(TypedDict, total=False):
    """The keyword arguments every layer's constructor hands on to :class:`AbstractSequenceLayer`.

    A layer whose signature lists only its own options takes these as ``**common: Unpack[LayerOptions]``
    and passes them on with ``super().__init__(hidden_dim, state_dim, **common)``.
    """

    dtype: DTypeLike
    param_dtype: DTypeLike
    scan: str
    chunk_size: int


class AbstractSequenceLayer(nnx.Module, abc.ABC):
    """(seq, hidden) -> (seq, hidden), optionally batched; includes the layer's own D*u skip.

    The contract (built-in layers and plugins alike):

    - construct as ``Layer(hidden_dim, state_dim, *, rngs, dtype=jnp.float32, param_dtype=jnp.float32,
      scan="auto", **own_options)`` and call ``super().__init__(hidden_dim, state_dim, dtype=dtype,
      param_dtype=param_dtype, scan=scan)`` first. The shared keywords may instead travel as
      ``**common: Unpack[LayerOptions]``, passed on by ``super().__init__(hidden_dim, state_dim, **common)``
      (the built-in layers do, and read ``self.dtype`` and ``self.param_dtype`` after it). A suite's
      ``layer_options`` may set any keyword option but ``rngs``, ``dtype``, ``param_dtype`` and ``scan``,
      the base's included when they travel as ``**common`` (``chunk_size``);
    - implement ``_forward(u)`` on one (seq, hidden) sequence; it must be causal (output t depends on
      inputs 0..t only), deterministic, jit-able, and honour float64 under ``jax_enable_x64``.

    Optional, with defaults:

    - ``scans``: the backends the layer offers, default ``("auto",)`` (the layer picks its own
      computation). A layer built on :func:`~dlbench.layers.kernels.scan.linear_scan` declares
      :data:`SCAN_CHOICES` and passes ``self.resolve_scan(seq_len)`` on. ``dlbench check`` compares
      every declared backend with "sequential" when that is declared.
    - ``preferred``: platform -> backend tried by "auto" before the generic rule.
    - ``default_chunk_size``: the ``chunk_size`` when none is given, default ``DEFAULT_CHUNK_SIZE``.
    - ``_forward_batched(u)``: (batch, seq, hidden); default ``jax.vmap(self._forward)``.
    - ``min_bytes_per_token(dtype_bytes)``: default 2 H dtype_bytes (read the input, write the output).

    Args (shared by every layer's constructor):
      hidden_dim: H, the width of the input and output.
      state_dim: P, the state size (its meaning per layer is in docs/models.md).
      rngs: ``nnx.Rngs`` for initialisation (not taken by this base constructor).
      dtype: computation dtype of inputs and outputs.
      param_dtype: storage dtype of the parameters.
      scan: one of ``scans`` (the generic backends plus any the layer adds) or "auto".
      chunk_size: steps per chunk for the chunked backend (default ``default_chunk_size``).
    """

    scans: ClassVar[tuple[str, ...]] = ("auto",)
    # Backends listed here are tried by "auto" before the generic rule (fastest exact first).
    preferred: ClassVar[dict[str, str]] = {}
    default_chunk_size: ClassVar[int] = DEFAULT_CHUNK_SIZE

    def __init__(
        self,
        hidden_dim: int,
        state_dim: int,
        *,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        scan: str = "auto",
        chunk_size: int | None = None,
    ):
        check_choice(f"scan backend for {type(self).__name__}", scan, self.scans)
        if hidden_dim < 1 or state_dim < 1:
            raise ValueError(f"hidden_dim and state_dim must be positive, got {hidden_dim} and {state_dim}")
        self.hidden_dim = hidden_dim
        self.state_dim = state_dim
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.scan = scan
        self.chunk_size = self.default_chunk_size if chunk_size is None else chunk_size

    def resolve_scan(self, seq_len: int) -> str:
        """The concrete backend this call uses (resolves "auto" for the default device).

        "auto" becomes the layer's ``preferred`` backend for the platform, else the generic rule of
        :func:`auto_backend`, else (a layer that declares neither) "auto" itself.
        """
        if self.scan != "auto":
            return self.scan
        platform = jax.default_backend()
        if platform in self.preferred:
            return self.preferred[platform]
        generic = auto_backend(platform, seq_len)
        return generic if generic in self.scans else "auto"

    def __call__(self, x: Float[Array, "*batch seq hidden"]) -> Float[Array, "*batch seq hidden"]:
        if x.ndim == 2:
            return self._forward(x)
        if x.ndim == 3:
            return self._forward_batched(x)
        raise ValueError(f"{type(self).__name__} expects (seq, hidden) or (batch, seq, hidden), got shape {x.shape}")

    @abc.abstractmethod
    def _forward(self, u: Float[Array, "seq hidden"]) -> Float[Array, "seq hidden"]:
        """One sequence through the layer."""

    def _forward_batched(self, u: Float[Array, "batch seq hidden"]) -> Float[Array, "batch seq hidden"]:
        """A batch of sequences; a layer whose formulation handles the batch natively overrides this."""
        return jax.vmap(self._forward)(u)

    def min_bytes_per_token(self, dtype_bytes: int) -> int:
        """The fewest bytes one token must move through memory in a forward pass of this layer.

        Reading the input and writing the output (2 H values) plus whatever state the formulation
        cannot avoid touching per step; the formula per layer is documented in its docstring and the
        README. Used to put achieved throughput against the device's measured bandwidth. Default:
        2 H dtype_bytes (input and output only); a layer that knows its state traffic overrides it.
        """
        return 2 * self.hidden_dim * dtype_bytes

    def min_bytes_per_token_at(self, seq_len: int, dtype_bytes: int) -> int:
        """:meth:`min_bytes_per_token` at a given length (only attention's depends on it)."""
        return self.min_bytes_per_token(dtype_bytes)
