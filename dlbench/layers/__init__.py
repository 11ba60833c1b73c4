"""Sequence layers (Flax NNX) behind one contract, and the shared scan primitives.

Importing this package registers every model (see :mod:`dlbench.registry`).
"""

# Import order is the order `dlbench models` lists them: the oscillatory family first, attention last.
from dlbench.layers.oscillatory import DLinOSS, LinOSS  # isort: skip
from dlbench.layers.s5 import S5  # isort: skip
from dlbench.layers.lru import LRU  # isort: skip
from dlbench.layers.mamba import S6, Mamba  # isort: skip
from dlbench.layers.attention import Attention  # isort: skip
from dlbench.layers.base import SCAN_CHOICES, AbstractSequenceLayer, LayerOptions, SSMParam
from dlbench.layers.kernels.scan import BLOCK2X2, DIAGONAL, fused_scan, linear_scan, scan_chunks
from dlbench.layers.kernels.selective import selective_scan

__all__ = [
    "AbstractSequenceLayer",
    "LayerOptions",
    "SCAN_CHOICES",
    "SSMParam",
    "LinOSS",
    "DLinOSS",
    "S5",
    "LRU",
    "S6",
    "Mamba",
    "selective_scan",
    "Attention",
    "BLOCK2X2",
    "DIAGONAL",
    "fused_scan",
    "linear_scan",
    "scan_chunks",
]
