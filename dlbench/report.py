"""Console tables, leaderboards, comparisons and plots, all derived from result rows."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from rich.table import Table

from dlbench.errors import DlbenchError
from dlbench.models import ModelConfig, build_model, count_parameters
from dlbench.registry import get_model, model_names


def models_table(names: Sequence[str] | None, config: ModelConfig) -> Table:
    """A table of registered models, each built with ``config`` to count its parameters."""
    names = tuple(names) if names else model_names()
    specs = [get_model(n) for n in names]
    table = Table(
        title=f"dlbench models (H={config.hidden_dim}, P={config.state_dim}, blocks={config.num_blocks}, "
        f"inputs={config.num_inputs}, classes={config.num_outputs}, norm={config.norm})"
    )
    for column in ("model", "layer", "options", "scan backends", "parameters", "description"):
        table.add_column(column, justify="right" if column == "parameters" else "left")
    for spec in specs:
        try:
            model = build_model(spec.name, dataclasses.replace(config, scan="auto"))
        except DlbenchError:
            raise
        except ValueError as error:
            raise DlbenchError(f"cannot build {spec.name!r} with these sizes: {error}") from None
        options = ", ".join(f"{k}={v}" for k, v in spec.options.items()) or "-"
        table.add_row(
            spec.name, spec.layer.__name__, options, ", ".join(spec.layer.scans), f"{count_parameters(model):,}", spec.description
        )
    return table
