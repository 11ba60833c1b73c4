"""dlbench: benchmark long-sequence state-space models (D-LinOSS, LinOSS, S5, LRU, S6, Mamba, attention).

The public plugin contract is importable from the top level (loaded lazily, so ``import dlbench``
stays free of JAX until one of these is touched)::

    import dlbench

    @dlbench.register_model("my-layer", description="...")
    class MyLayer(dlbench.AbstractSequenceLayer): ...

- :func:`register_model` (``dlbench.registry``): class decorator, name -> layer and its options.
- :class:`AbstractSequenceLayer` (``dlbench.layers.base``): the one layer contract.
- :class:`SSMParam` (``dlbench.layers.base``): parameters of the dynamics (own learning rate).
- :func:`load_plugins` (``dlbench.plugins``): import plugin modules or files by name or path.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_PUBLIC = {
    "register_model": "dlbench.registry",
    "AbstractSequenceLayer": "dlbench.layers.base",
    "SSMParam": "dlbench.layers.base",
    "load_plugins": "dlbench.plugins",
}

__all__ = ["__version__", "register_model", "AbstractSequenceLayer", "SSMParam", "load_plugins"]

if TYPE_CHECKING:  # pragma: no cover
    from dlbench.layers.base import AbstractSequenceLayer, SSMParam
    from dlbench.plugins import load_plugins
    from dlbench.registry import register_model


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dlbench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
