"""Sequence layers (Flax NNX) behind one contract, and the shared scan primitives."""

from dlbench.layers.base import AbstractSequenceLayer, SSMParam
from dlbench.layers.scan import BLOCK2X2, DIAGONAL, linear_scan, scan_chunks

__all__ = ["AbstractSequenceLayer", "SSMParam", "BLOCK2X2", "DIAGONAL", "linear_scan", "scan_chunks"]

# Each import registers the models its layer backs (see dlbench.registry).
from dlbench.layers import attention  # noqa: E402,F401
