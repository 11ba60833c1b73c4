"""Model names -> sequence layers and their options.

A layer class registers the model names it backs with a decorator beside the class::

    @register_model("linoss-im", discretization="IM")
    @register_model("linoss-imex", discretization="IMEX")
    class LinOSS(AbstractSequenceLayer): ...

The training and timing loops only ever go through :func:`get_model` and :func:`model_names`.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from dlbench.errors import DlbenchError, UnknownChoiceError, check_choice

_MODELS: dict[str, ModelSpec] = {}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A registered model: the sequence layer class and the options that define this variant."""

    name: str
    layer: type
    options: MappingProxyType
    description: str

    def check_options(self, options: Mapping[str, Any], scan: str) -> None:
        """Refuse a layer option or scan backend this model's layer does not take (before any run)."""
        params = inspect.signature(self.layer.__init__).parameters
        shared = ("rngs", "dtype", "param_dtype", "scan")
        valid = [n for n, p in params.items() if p.kind is p.KEYWORD_ONLY and n not in shared]
        for key in options:
            check_choice(f"layer option for {self.name}", key, valid)
        check_choice(f"scan backend for {self.name}", scan, self.layer.scans)

    def make_layer(self, hidden_dim: int, state_dim: int, **overrides: Any):
        """Construct this model's sequence layer; ``overrides`` win over the registered options."""
        return self.layer(hidden_dim, state_dim, **{**self.options, **overrides})


def register_model(name: str, *, description: str = "", **options: Any) -> Callable[[type], type]:
    """Class decorator: register ``name`` as ``cls`` constructed with ``options``."""

    def decorate(cls: type) -> type:
        if name in _MODELS and _MODELS[name].layer is not cls:
            raise ValueError(f"model name {name!r} is already registered to {_MODELS[name].layer.__name__}")
        doc = description or (cls.__doc__ or cls.__name__).strip().splitlines()[0]
        _MODELS[name] = ModelSpec(name, cls, MappingProxyType(dict(options)), doc)
        return cls

    return decorate


def _load() -> None:
    # Importing the layers package runs every registration decorator exactly once.
    importlib.import_module("dlbench.layers")


def model_names() -> tuple[str, ...]:
    """Registered model names, in registration order."""
    _load()
    return tuple(_MODELS)


def get_model(name: str) -> ModelSpec:
    """The spec registered under ``name``; an unknown name lists the valid ones."""
    _load()
    try:
        return _MODELS[name]
    except KeyError:
        raise UnknownChoiceError("model", name, _MODELS) from None


def parse_model_list(text: str) -> tuple[str, ...]:
    """``"all"`` or a comma-separated list of model names, validated."""
    if text.strip() == "all":
        return model_names()
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:  # an empty list must not silently mean "every model"
        raise DlbenchError(f"no model given; valid choices: all, {', '.join(model_names())}")
    for n in names:
        get_model(n)
    return names
