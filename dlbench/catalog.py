"""The ``dlbench models`` table: every registered model built once, abstractly, to count its parameters.

Lives outside ``dlbench.report`` because it builds models (imports Flax and the layers).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
from flax import nnx
from rich.table import Table

from dlbench.errors import DlbenchError
from dlbench.models import ModelConfig, build_model, count_parameters
from dlbench.registry import get_model, model_names


def _parameter_count(name: str, config: ModelConfig) -> int:
    """Parameters of ``name`` built with ``config``, from shapes alone where the layer allows it.

    ``nnx.eval_shape`` traces the initialisers instead of running them: one op-by-op compile per
    initialiser made ``dlbench models`` take 10 s. A layer that draws its initial values on the host
    (D-LinOSS's rejection sampling needs concrete values) is built for real.
    """
    try:
        return count_parameters(nnx.eval_shape(lambda: build_model(name, config)))
    except jax.errors.JAXTypeError:
        return count_parameters(build_model(name, config))


def models_table(names: Sequence[str] | None, config: ModelConfig) -> Table:
    """A table of registered models, each built with ``config`` to count its parameters."""
    names = tuple(names) if names else model_names()
    specs = [get_model(n) for n in names]
    table = Table(
        title=f"dlbench models (H={config.hidden_dim}, P={config.state_dim}, blocks={config.num_blocks}, "
        f"inputs={config.num_inputs}, classes={config.num_outputs}, norm={config.norm})"
    )
    table.add_column("model", no_wrap=True)
    table.add_column("layer", no_wrap=True)
    table.add_column("options")
    table.add_column("parameters", justify="right", no_wrap=True)
    table.add_column("scan backends")
    unbuildable = {}
    for spec in specs:
        try:
            count = f"{_parameter_count(spec.name, dataclasses.replace(config, scan='auto')):,}"
        except DlbenchError:
            raise
        except ValueError as error:  # one layer's size rule (S5's even P) must not hide the others
            unbuildable[spec.name] = str(error).splitlines()[0]
            count = "n/a"
        options = ", ".join(f"{k}={v}" for k, v in spec.options.items()) or "-"
        table.add_row(spec.name, spec.layer.__name__, options, count, " ".join(spec.layer.scans))
    if len(unbuildable) == len(specs):
        raise DlbenchError("no model can be built with these sizes: " + "; ".join(f"{k}: {v}" for k, v in unbuildable.items()))
    table.caption = "\n".join(
        f"{spec.name}: {spec.description}" + (f" (n/a here: {unbuildable[spec.name]})" if spec.name in unbuildable else "")
        for spec in specs
    )
    table.caption_justify = "left"
    return table
