"""``dlbench compare``: match the cells of two runs, compare each, and a CI gate that can fail.

Per cell: the ratio NEW/BASE of a statistic (median) with a bootstrap CI, and a two-sided
Mann-Whitney U test (scipy.stats) on the raw samples (timing repeats, or one final value per seed).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from dlbench.errors import DlbenchError, check_choice
from dlbench.report.cells import (
    NEUTRAL_METRICS,
    Cell,
    _sort_key,
    cells,
    check_unmixed,
    format_value,
    higher_is_better,
    sections,
)


class GateFailed(DlbenchError):
    """A ``--fail-if`` gate of ``dlbench compare`` failed: exit code 1 (2 stays "bad input")."""

    exit_code = 1


STATISTICS: dict[str, Callable[[np.ndarray], float]] = {"median": np.median, "mean": np.mean}


@dataclasses.dataclass(frozen=True)
class Gate:
    """Fail when NEW's ``statistic`` is worse than BASE's by more than ``threshold`` (a fraction)
    and the difference is significant."""

    statistic: str
    threshold: float

    @classmethod
    def parse(cls, text: str) -> Gate:
        """Parse ``median:5%`` (or ``median:0.05``)."""
        name, _, amount = text.partition(":")
        check_choice("gate statistic", name, STATISTICS)
        try:
            threshold = float(amount[:-1]) / 100 if amount.endswith("%") else float(amount)
        except ValueError:
            raise DlbenchError(f"bad --fail-if {text!r}; expected STAT:PERCENT such as median:5%") from None
        if not threshold >= 0:
            raise DlbenchError(f"bad --fail-if {text!r}; the threshold must be >= 0")
        return cls(name, threshold)

    def __str__(self) -> str:
        return f"{self.statistic}:{100 * self.threshold:g}%"


def smallest_p_value(n_base: int, n_new: int) -> float:
    """The smallest two-sided p-value a rank test can give with these sample sizes: the most extreme
    arrangement (every NEW sample beyond every BASE sample) has probability 1 / C(n_base + n_new, n_new)
    in each tail. 2 vs 2 samples: 2/6 = 0.33, so no difference can be significant at 0.05."""
    if n_base == 0 or n_new == 0:
        return math.nan
    return min(1.0, 2.0 / math.comb(n_base + n_new, n_new))


def testable(n_base: int, n_new: int, alpha: float) -> bool:
    """Whether a Mann-Whitney U test on samples of these sizes can reach p < ``alpha`` at all."""
    return bool(smallest_p_value(n_base, n_new) < alpha)


def significance(base: np.ndarray, new: np.ndarray) -> float:
    """Two-sided Mann-Whitney U p-value of NEW against BASE (scipy.stats.mannwhitneyu: exact for small
    samples without ties, else the normal approximation with tie and continuity corrections)."""
    from scipy.stats import mannwhitneyu

    if len(base) == 0 or len(new) == 0:
        return math.nan
    if np.array_equal(np.sort(base), np.sort(new)):
        return 1.0  # identical samples (a run compared with itself); scipy warns on zero variance
    return float(mannwhitneyu(new, base, alternative="two-sided").pvalue)


def bootstrap_ratio_ci(
    base: np.ndarray, new: np.ndarray, statistic: str = "median", level: float = 0.95, n_boot: int = 2000
) -> tuple[float, float]:
    """Percentile bootstrap CI (scipy.stats.bootstrap) of stat(new)/stat(base), resampling each run
    independently, with a fixed seed so the same inputs always give the same interval. NaN when a
    side has fewer than two samples (one value has no spread to resample)."""
    from scipy.stats import bootstrap

    if len(base) < 2 or len(new) < 2:
        return math.nan, math.nan
    stat = STATISTICS[statistic]

    def ratio(n: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return stat(n, axis=axis) / stat(b, axis=axis)

    with np.errstate(divide="ignore", invalid="ignore"):
        result = bootstrap(
            (np.asarray(new, float), np.asarray(base, float)), ratio, n_resamples=n_boot, confidence_level=level,
            method="percentile", vectorized=True, paired=False, rng=np.random.default_rng(0),
        )  # fmt: skip
    low, high = result.confidence_interval
    return float(low), float(high)


COMPARE_COLUMNS = (
    "section", "cell", "metric", "unit", "n_base", "n_new", "base", "new", "ratio", "ci_low", "ci_high", "p_value",
    "testable", "significant", "verdict", "gate_failed",
)  # fmt: skip


def compare(
    base: pd.DataFrame,
    new: pd.DataFrame,
    *,
    gate: Gate | None = None,
    alpha: float = 0.01,
    metrics: Sequence[str] | None = None,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Match cells of two runs and compare each: ratio NEW/BASE of the gate's statistic (median by
    default) with a (1 - alpha) bootstrap CI, and a Mann-Whitney U p-value on the raw samples.

    A cell fails the gate when it got worse by more than the threshold (in the metric's direction,
    see :data:`HIGHER_IS_BETTER`) and p < alpha; when it now fails (oom, timeout...) and did not
    before; and, where the sample sizes cannot reach p < alpha at all (:func:`testable`: 2 vs 2
    samples give p >= 0.33), when the point estimate alone is worse by more than the threshold, with
    the verdict "not testable with n=2; ratio 2.0x". Returns the comparison (``COMPARE_COLUMNS``) and counts of unmatched cells.
    """
    statistic = gate.statistic if gate else "median"
    stat = STATISTICS[statistic]
    if metrics:
        base, new = base[base["metric"].isin(metrics)], new[new["metric"].isin(metrics)]
    base_cells, new_cells = cells(base), cells(new)
    _add_failed_counterparts(base_cells, new_cells)
    _add_failed_counterparts(new_cells, base_cells)
    shared = sorted(set(base_cells) & set(new_cells))
    if not shared:
        raise DlbenchError("no cells in common between BASE and NEW (different suites, models or sizes?)")
    labels = {id(cell): (title, label) for title, members in sections(base_cells[k] for k in shared) for label, cell in members}
    out = []
    for key in sorted(shared, key=lambda k: _sort_key(base_cells[k].key)):
        b, n = base_cells[key], new_cells[key]
        metric = b.metric
        row: dict[str, Any] = {
            "section": labels[id(b)][0],
            "cell": labels[id(b)][1],
            "metric": metric,
            "unit": b.unit,
            "n_base": len(b.samples),
            "n_new": len(n.samples),
            "base": stat(b.samples) if len(b.samples) else math.nan,
            "new": stat(n.samples) if len(n.samples) else math.nan,
        }
        with np.errstate(divide="ignore", invalid="ignore"):
            row["ratio"] = row["new"] / row["base"] if row["base"] else math.nan
        row["ci_low"], row["ci_high"] = bootstrap_ratio_ci(b.samples, n.samples, statistic, 1 - alpha)
        row["p_value"] = significance(b.samples, n.samples)
        row["testable"] = testable(len(b.samples), len(n.samples), alpha)
        row["significant"] = bool(row["p_value"] < alpha)
        # Positive = worse by this fraction, in the metric's direction.
        change = 1 - row["ratio"] if higher_is_better(metric) else row["ratio"] - 1
        beyond = gate is not None and bool(change > gate.threshold)
        row["gate_failed"] = False
        if len(b.samples) and not len(n.samples):
            row["verdict"] = "now " + "/".join(n.failures or {"missing": ""})
            row["gate_failed"] = gate is not None
        elif not len(b.samples):
            row["verdict"] = "was " + "/".join(b.failures or {"missing": ""})
        elif metric in NEUTRAL_METRICS:
            row["verdict"] = "same" if row["ratio"] == 1 else "changed"
        elif not row["testable"]:
            # No test on these sample sizes can reach alpha: say so, and gate on the point estimate
            # (a gate that cannot fail is no gate).
            sizes = f"{len(b.samples)}" if len(b.samples) == len(n.samples) else f"{len(b.samples)} vs {len(n.samples)}"
            row["verdict"] = f"not testable with n={sizes}; ratio {row['ratio']:.3g}x"
            row["gate_failed"] = beyond
        elif not row["significant"]:
            row["verdict"] = "n.s."
        else:
            row["verdict"] = "worse" if change > 0 else "better"
            row["gate_failed"] = beyond and change > 0
        out.append(row)
    unmatched = {"only_base": len(set(base_cells) - set(new_cells)), "only_new": len(set(new_cells) - set(base_cells))}
    return pd.DataFrame(out, columns=list(COMPARE_COLUMNS)), unmatched


def _point(cell: Cell) -> tuple[str, ...]:
    """A cell's measurement point: its key without the metric (and the metric's source)."""
    return tuple(v for k, v in cell.key.items() if k not in ("metric", "source"))


def _add_failed_counterparts(measured: dict[tuple[str, ...], Cell], other: dict[tuple[str, ...], Cell]) -> None:
    """Give ``other`` a failed cell for each cell of ``measured`` whose measurement point failed there.

    A failed point writes one status row (a sweep's ``cell_s``, a run's ``test_loss``), not the
    metrics it measures when it works; without this, those metrics would look merely unmatched
    instead of "now oom" / "was timeout".
    """
    failed: dict[tuple[str, ...], dict[str, str]] = {}
    for cell in other.values():
        if cell.failures and not len(cell.samples):
            failed.setdefault(_point(cell), {}).update(cell.failures)
    for key, cell in measured.items():
        if key not in other and _point(cell) in failed:
            other[key] = Cell(cell.key, np.array([]), failed[_point(cell)], unit=cell.unit)


def compare_tables(result: pd.DataFrame, statistic: str = "median", alpha: float = 0.01) -> list[Table]:
    """Rich tables of :func:`compare`'s result, one per section; failing cells in red, not significant
    differences (n.s.) dimmed."""
    level = f"{100 * (1 - alpha):g}%"
    tables = []
    for section, part in result.groupby("section", sort=False):
        table = Table(
            title=f"{section}: NEW vs BASE", title_justify="left",
            caption=f"ratio of {statistic}s, {level} bootstrap CI, Mann-Whitney U p; n.s. = not significant at {alpha:g}; "
            "not testable = too few samples for any p < alpha (the gate then uses the ratio alone)",
        )  # fmt: skip
        for column in ("cell", "metric", "base", "new", "ratio", f"{level} CI", "p", "n", "verdict"):
            table.add_column(column, justify="left" if column in ("cell", "metric", "verdict") else "right")
        for r in part.itertuples():
            style = "bold red" if r.gate_failed else ("dim" if not r.significant else "")
            table.add_row(
                r.cell, r.metric, format_value(r.base, r.unit), format_value(r.new, r.unit),
                f"{r.ratio:.3f}" if np.isfinite(r.ratio) else "-",
                f"[{r.ci_low:.3f}, {r.ci_high:.3f}]" if np.isfinite(r.ci_low) else "-",
                f"{r.p_value:.2g}" if np.isfinite(r.p_value) else "-", f"{r.n_base}/{r.n_new}",
                r.verdict + (" FAIL" if r.gate_failed else ""), style=style,
            )  # fmt: skip
        tables.append(table)
    return tables


def compare_runs(
    base_paths: Sequence[str | Path],
    new_paths: Sequence[str | Path],
    *,
    fail_if: str | None = None,
    alpha: float = 0.01,
    metrics: Sequence[str] | None = None,
    console: Console | None = None,
    fmt: str | None = None,
) -> pd.DataFrame:
    """Read, compare and print two runs (``fmt``: table, plain, csv or json, see
    :mod:`dlbench.report.render`); raise :class:`GateFailed` (exit 1) naming the failing cells."""
    from dlbench.report.render import render, resolve_format
    from dlbench.rundir import read_rows

    if not 0 < alpha < 1:
        raise DlbenchError(f"--alpha must be in (0, 1), got {alpha}")
    gate = Gate.parse(fail_if) if fail_if else None
    result, unmatched = compare(check_unmixed(read_rows(base_paths)), check_unmixed(read_rows(new_paths)), gate=gate, alpha=alpha, metrics=metrics)
    console = console or Console()
    fmt = resolve_format(fmt, console)
    render(compare_tables(result, gate.statistic if gate else "median", alpha), fmt, console, frame=result)
    if unmatched["only_base"] or unmatched["only_new"]:
        # On stderr for csv/json, so that standard output stays parseable.
        message = (f"warning: unmatched cells: {unmatched['only_base']} only in BASE, "
                   f"{unmatched['only_new']} only in NEW")  # fmt: skip
        (Console(stderr=True) if fmt in ("csv", "json") else console).print(message, highlight=False)
    failed = result[result["gate_failed"]]
    if len(failed):
        named = [
            f"{r.section}: {r.cell} {r.metric} ({r.verdict}"
            + (f", x{r.ratio:.3g})" if math.isfinite(r.ratio) and "ratio" not in r.verdict else ")")
            for r in failed.itertuples()
        ]
        more = f"; and {len(named) - 10} more (see the table)" if len(named) > 10 else ""
        raise GateFailed(f"gate {gate} failed for {len(failed)} cell(s): {'; '.join(named[:10])}{more}")
    return result


