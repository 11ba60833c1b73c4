"""Views of result rows: leaderboards and their writers, compare, show, plots, the HTML report and
the end-of-run summary. Leaves: everything here only reads rows (``dlbench.rundir.read_rows``) and
never imports JAX, Flax, ``dlbench.models`` or a layer, so ``dlbench export/compare/show/plot`` on
plain CSV files start in a fraction of a second (a test checks ``sys.modules``).

Modules: ``cells`` (vocabulary, grouping rows into cells, number formats), ``published`` (the papers'
numbers), ``leaderboard`` (boards + csv/md/latex), ``compare`` (statistics and the gate), ``show``,
``plots``, ``render`` (tables for terminals, pipes and scripts), ``summary`` (end of a run),
``html`` (``dlbench report``).
"""

from __future__ import annotations

from dlbench.report.cells import (
    CELL_KEYS,
    FAILED_STATUSES,
    HIGHER_IS_BETTER,
    NEUTRAL_METRICS,
    PER_REPEAT_METRICS,
    Cell,
    cell_label,
    cells,
    format_value,
    higher_is_better,
    sections,
)  # fmt: skip
from dlbench.report.compare import (
    COMPARE_COLUMNS,
    STATISTICS,
    Gate,
    GateFailed,
    bootstrap_ratio_ci,
    compare,
    compare_runs,
    compare_tables,
    significance,
)  # fmt: skip
from dlbench.report.leaderboard import (
    FORMATS,
    LEADERBOARD_KINDS,
    THROUGHPUT_COLUMNS,
    TRAINING_COLUMNS,
    export_leaderboard,
    leaderboards,
    throughput_leaderboard,
    training_leaderboard,
)  # fmt: skip
from dlbench.report.plots import PLOT_KINDS, PLOTS, plot_memory, plot_results, plot_throughput, plot_training
from dlbench.report.published import _UEA_DATASETS, PUBLISHED, TASK_ALIASES, Reference, published
from dlbench.report.show import cell_warnings, show, show_tables

__all__ = [
    "CELL_KEYS", "COMPARE_COLUMNS", "FAILED_STATUSES", "FORMATS", "HIGHER_IS_BETTER", "LEADERBOARD_KINDS", "NEUTRAL_METRICS",
    "PER_REPEAT_METRICS", "PLOTS", "PLOT_KINDS", "PUBLISHED", "STATISTICS", "TASK_ALIASES", "THROUGHPUT_COLUMNS",
    "TRAINING_COLUMNS", "_UEA_DATASETS", "Cell", "Gate", "GateFailed", "Reference", "bootstrap_ratio_ci", "cell_label",
    "cell_warnings", "cells", "compare", "compare_runs", "compare_tables", "export_leaderboard", "format_value",
    "higher_is_better", "leaderboards", "plot_memory", "plot_results", "plot_throughput", "plot_training", "published",
    "sections", "show", "show_tables", "significance", "throughput_leaderboard", "training_leaderboard",
]  # fmt: skip
