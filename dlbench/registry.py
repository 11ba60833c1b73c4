"""Model names -> sequence layers and their options: the public plugin contract's name table.

A layer class registers the model names it backs with a decorator beside the class::

    @register_model("linoss-im", discretization="IM")
    @register_model("linoss-imex", discretization="IMEX")
    class LinOSS(AbstractSequenceLayer): ...

This module imports no layer: it is only the table. The built-in models are registered by importing
:mod:`dlbench.layers` (``dlbench.models`` does), plugins by :func:`dlbench.plugins.load_plugins`, and
:func:`dlbench.plugins.load_models` does both (built-ins, ``DLBENCH_PLUGINS``, entry points). The
training and timing loops only ever go through :func:`get_model` and :func:`model_names`.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from dlbench.errors import DlbenchError, UnknownChoiceError, check_choice

_MODELS: dict[str, ModelSpec] = {}


class DuplicateModelError(DlbenchError, ValueError):
    """A model name registered twice to different layers."""


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A registered model: the sequence layer class and the options that define this variant."""

    name: str
    layer: type
    options: MappingProxyType
    description: str

    def check_options(self, options: Mapping[str, Any], scan: str) -> None:
        """Refuse a layer option or scan backend this model's layer does not take (before any run)."""
        shared = ("rngs", "dtype", "param_dtype", "scan")
        valid = [n for n in _keyword_options(self.layer) if n not in shared]
        for key in options:
            check_choice(f"layer option for {self.name}", key, valid)
        check_choice(f"scan backend for {self.name}", scan, self.layer.scans)

    def make_layer(self, hidden_dim: int, state_dim: int, **overrides: Any):
        """Construct this model's sequence layer; ``overrides`` win over the registered options."""
        return self.layer(hidden_dim, state_dim, **{**self.options, **overrides})


def _keyword_options(layer: type) -> list[str]:
    """The keyword-only parameters of ``layer``'s constructor, those of the base classes' first.

    A constructor that takes ``**common`` hands them to ``super().__init__``, so the keyword-only
    parameters of the next constructor up the MRO count too, up to the first without ``**``.
    """
    chain = []
    for cls in layer.__mro__:
        if "__init__" not in vars(cls):
            continue
        params = inspect.signature(vars(cls)["__init__"]).parameters.values()
        chain.append([p.name for p in params if p.kind is p.KEYWORD_ONLY])
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return list(dict.fromkeys(name for names in reversed(chain) for name in names))


def _where(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def register_model(name: str, *, description: str = "", **options: Any) -> Callable[[type], type]:
    """Class decorator: register ``name`` as ``cls`` constructed with ``options``.

    Args:
      name: the model name used on the command line and in result rows (lower case, no commas).
      description: one line for ``dlbench models`` (default: the first line of the class docstring).
      options: keyword arguments passed to the layer's constructor for this variant.

    Raises:
      DuplicateModelError: ``name`` is already registered to another class.
    """
    if not isinstance(name, str) or not name.strip() or "," in name or name != name.strip():
        raise DlbenchError(f"model name must be a non-empty string without commas or surrounding spaces, got {name!r}")

    def decorate(cls: type) -> type:
        if name in _MODELS and _where(_MODELS[name].layer) != _where(cls):
            raise DuplicateModelError(
                f"model name {name!r} is already registered to {_where(_MODELS[name].layer)}; {_where(cls)} registers it again"
            )
        doc = description or (cls.__doc__ or cls.__name__).strip().splitlines()[0]
        _MODELS[name] = ModelSpec(name, cls, MappingProxyType(dict(options)), doc)
        return cls

    return decorate


def _registered() -> dict[str, ModelSpec]:
    if not _MODELS:
        # A programming error, not a user's: the process never imported the built-ins.
        raise RuntimeError("no model is registered: import dlbench.layers or call dlbench.plugins.load_models() first")
    return _MODELS


def model_names() -> tuple[str, ...]:
    """Registered model names, in registration order (built-ins first, then plugins)."""
    return tuple(_registered())


def get_model(name: str) -> ModelSpec:
    """The spec registered under ``name``; an unknown name lists the valid ones."""
    models = _registered()
    try:
        return models[name]
    except KeyError:
        raise UnknownChoiceError("model", name, models) from None


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
