"""Sequence layers (Flax NNX) behind one contract, and the shared scan primitives.

Importing this package registers every model (see :mod:`dlbench.registry`).
"""

# Import order is the order `dlbench models` lists them: the oscillatory family first, attention last.
from dlbench.layers.oscillatory import DLinOSS, LinOSS  # isort: skip
from dlbench.layers.s5 import S5  # isort: skip
from dlbench.layers.lru import LRU  # isort: skip
from dlbench.layers.mamba import S6, Mamba, selective_scan  # isort: skip
from dlbench.layers.attention import Attention  # isort: skip
from dlbench.layers.base import AbstractSequenceLayer, SSMParam
from dlbench.layers.scan import BLOCK2X2, DIAGONAL, linear_scan, scan_chunks

__all__ = [
    "AbstractSequenceLayer",
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
    "linear_scan",
    "scan_chunks",
]
