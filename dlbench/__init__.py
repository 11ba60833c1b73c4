"""dlbench: benchmark long-sequence state-space models (D-LinOSS, LinOSS, S5, LRU, S6, Mamba, attention)."""

__version__ = "0.1.0"
