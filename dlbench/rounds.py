"""Rounds, as asv does: the schedule that visits a sweep's cells, and when a cell has been measured enough.

JAX-free and blind to what a cell computes: a cell is anything with ``series()``, ``seq_len``,
``axes()``, ``label()``, ``batch``; one round of it is a ``measure(cell, round)`` call. Each round
visits the cells that still want one in a fresh order drawn from the sweep's seed; every cell gets at
least ``rounds`` rounds, then more while the 95% interval of its pooled median is wider than
``target`` (relative half-width), up to ``max_rounds`` or until the sweep is ``budget`` seconds old.
A cell that ends wider than the target records why (``stopped_short``). Also here: the closing
"N of M cells ok" line and its exit rule, and what a user sees while a sweep runs.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from dlbench.errors import DlbenchError
from dlbench.timing_policy import STOPPING, MedianCI, median_ci

# ---------------------------------------------------------------------------------------------
# Rounds.


@dataclasses.dataclass
class CellProgress:
    """What the rounds know of one cell: its samples per round and how it ended."""

    cell: Any
    samples: dict[int, list[float]] = dataclasses.field(default_factory=dict)
    status: str = "ok"
    reason: str = ""
    per_token: float | None = None
    final: bool = False  # its interval rows are written
    options: str | None = None  # layer_options JSON of its rows (holds the resolved backend)
    stopped_short: str = ""

    @property
    def rounds_done(self) -> int:
        return len(self.samples)

    @property
    def failed(self) -> bool:
        return self.status != "ok"

    def pooled(self) -> list[float]:
        return [x for r in sorted(self.samples) for x in self.samples[r]]

    def interval(self) -> MedianCI | None:
        xs = self.pooled()
        return median_ci(xs) if xs else None

    def wants_round(self, rounds: int, max_rounds: int, target: float) -> bool:
        if self.failed or self.final or self.stopped_short:
            return False
        if self.rounds_done < rounds:
            return True
        interval = self.interval()
        return self.rounds_done < max_rounds and not (interval and interval.within(target))


def round_order(todo: Sequence[CellProgress], rng: random.Random) -> list[CellProgress]:
    """A fresh random order of ``todo``; cells in their first round keep ascending lengths within a
    series (so an OOM at length L can stop the longer ones before they run)."""
    order = list(todo)
    rng.shuffle(order)
    slots: dict[tuple, list[int]] = {}
    for i, p in enumerate(order):
        if p.rounds_done == 0:
            slots.setdefault(p.cell.series(), []).append(i)
    for positions in slots.values():
        members = sorted((order[i] for i in positions), key=lambda p: p.cell.seq_len)
        for i, p in zip(positions, members, strict=True):
            order[i] = p
    return order


Measure = Callable[[Any, int], tuple[str, str, list[float]]]


def run_rounds(
    progress: Sequence[CellProgress],
    measure: Measure,
    *,
    rounds: int,
    max_rounds: int,
    target: float,
    budget: float,
    seed: int,
    stops: dict[tuple, tuple[int, str]] | None = None,
    skip: Callable[[CellProgress, tuple[int, str]], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    on_measured: Callable[[CellProgress, int], None] | None = None,
) -> None:
    """Measure ``progress``'s cells in rounds until each is failed, within ``target`` after at least
    ``rounds`` rounds, at ``max_rounds``, or the sweep is past ``budget`` seconds (extra rounds only).

    ``measure(cell, round) -> (status, reason, wall_s samples)`` does one round of one cell. ``stops``
    holds, per series, the first stopping failure (length, status); longer cells of that series are
    handed to ``skip`` instead of being measured. Cells that end outside the target get
    ``stopped_short`` set to the reason.
    """
    stops = {} if stops is None else stops
    rng = random.Random(seed)
    started = clock()
    while True:
        todo = [p for p in progress if p.wants_round(rounds, max_rounds, target)]
        if not todo:
            break
        if any(p.rounds_done >= rounds for p in todo) and clock() - started > budget:
            for p in todo:
                if p.rounds_done >= rounds:
                    p.stopped_short = "time budget spent"
            todo = [p for p in todo if p.rounds_done < rounds]
            if not todo:
                break
        # One generator for the sweep: re-running it with the same seed visits cells in the same orders.
        for p in round_order(todo, rng):
            stop = stops.get(p.cell.series())
            if stop and p.cell.seq_len > stop[0]:
                p.status, p.reason = "skipped", f"{stop[1]} at seq_len {stop[0]}"
                if skip is not None:
                    skip(p, stop)
                continue
            round_index = p.rounds_done
            status, reason, samples = measure(p.cell, round_index)
            if status == "ok":
                p.samples[round_index] = list(samples)
                interval = p.interval()
                if p.rounds_done >= max(max_rounds, rounds) and interval and not interval.within(target):
                    p.stopped_short = "max rounds reached"
            else:
                p.status, p.reason = status, reason
                if status in STOPPING:
                    prior = stops.get(p.cell.series())
                    if prior is None or p.cell.seq_len < prior[0]:
                        stops[p.cell.series()] = (p.cell.seq_len, status)
            if on_measured is not None:
                on_measured(p, round_index)


def interval_rows(p: CellProgress, target: float, bandwidth: float | None) -> list[dict]:
    """The summary rows of a finished cell: wall_s_ci_low / _high (and bandwidth_fraction from the pooled median)."""
    interval = p.interval()
    if interval is None:
        return []
    note = f"95% CI of the median of {interval.n} repeats over {p.rounds_done} rounds (coverage {interval.coverage:.3f})"
    if p.stopped_short:
        note += f"; stopped short: +-{interval.half_width:.1%} > target +-{target:.1%} ({p.stopped_short})"
    base = {**p.cell.axes(), "layer_options": p.options}
    rows = [{**base, "metric": "wall_s_ci_low", "value": interval.low, "unit": "s", "source": "order statistics", "reason": note},
            {**base, "metric": "wall_s_ci_high", "value": interval.high, "unit": "s", "source": "order statistics", "reason": note}]
    if bandwidth and p.per_token:
        achieved = p.per_token * p.cell.batch * p.cell.seq_len / interval.median
        rows.append({**base, "metric": "bandwidth_fraction", "value": achieved / bandwidth, "unit": "1",
                     "source": "min_bytes/median/bandwidth"})
    return rows




class CellsFailed(DlbenchError):
    """A sweep in which a cell ended in ``error`` or every cell failed (exit code 1)."""

    exit_code = 1


FAILURES = ("error", "oom", "timeout", "nan")


def outcome_line(progress: Sequence[CellProgress]) -> str:
    """"N of M cells ok; K oom, J skipped, ..." (statuses in the vocabulary's order)."""
    from dlbench.rundir import STATUSES

    counts: dict[str, int] = {}
    for p in progress:
        counts[p.status] = counts.get(p.status, 0) + 1
    others = [f"{counts[s]} {s}" for s in STATUSES if s != "ok" and counts.get(s)]
    return f"{counts.get('ok', 0)} of {len(progress)} cells ok" + (f"; {', '.join(others)}" if others else "")


def check_outcome(progress: Sequence[CellProgress], console) -> None:
    """Print the closing summary; raise :class:`CellsFailed` when a cell ended in error or all failed."""
    line = outcome_line(progress)
    console.print(line)
    statuses = [p.status for p in progress]
    if "error" in statuses:
        raise CellsFailed(f"{statuses.count('error')} cell(s) ended in error ({line})")
    # Skipped cells follow a failure and n/a cells were never runnable: "all failed" is no cell ok
    # and at least one failure.
    if "ok" not in statuses and any(s in FAILURES for s in statuses):
        raise CellsFailed(f"every cell failed ({line})")



# ---------------------------------------------------------------------------------------------
# What the user sees while a sweep runs: a live table on a terminal, plain lines otherwise.


def _cell_text(p: CellProgress) -> tuple[str, str, str]:
    """(median ms, [low, high] ms, tokens/s) of a cell so far."""
    interval = p.interval()
    if interval is None:
        return "-", "-", "-"
    tokens = p.cell.batch * p.cell.seq_len / interval.median if interval.median > 0 else math.inf
    return f"{interval.median * 1e3:.3g}", f"[{interval.low * 1e3:.3g}, {interval.high * 1e3:.3g}]", f"{tokens:,.0f}"


class PlainLines:
    """One line per finished cell (stdout is not a terminal: logs, CI)."""

    def __init__(self, console):
        self.console = console

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def round_done(self, p: CellProgress, round_index: int, finished: bool) -> None:
        pass

    def finish(self, p: CellProgress) -> None:
        median, interval, _ = _cell_text(p)
        timing = f"median {median} ms 95% CI {interval} ms, {p.rounds_done} rounds" if median != "-" else "no timing"
        reason = f" ({p.reason})" if p.reason and p.failed else (f" (stopped short: {p.stopped_short})" if p.stopped_short else "")
        self.console.print(f"{p.cell.model} {p.cell.backend} L={p.cell.seq_len} {p.cell.mode}: {timing}: {p.status}{reason}",
                           soft_wrap=True, markup=False, highlight=False)


class LiveTable:
    """A progress bar (cell rounds) and a table of finished cells, redrawn as they finish."""

    def __init__(self, console, total: int):
        from rich.live import Live
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = console
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console)
        self.task = self.progress.add_task("cells", total=total)
        self.rows: list[tuple] = []
        self.live = Live(self._render(), console=console, refresh_per_second=4, transient=False)

    def _render(self):
        from rich.console import Group
        from rich.table import Table

        table = Table(title="finished cells", show_lines=False)
        for col in ("model", "backend", "mode", "seq_len", "median ms", "95% CI ms", "rounds", "tokens/s", "status"):
            table.add_column(col, justify="right" if col not in ("model", "backend", "mode", "status") else "left")
        for r in self.rows[-15:]:
            table.add_row(*r)
        return Group(self.progress, table)

    def __enter__(self):
        self.live.__enter__()
        return self

    def __exit__(self, *exc):
        return self.live.__exit__(*exc)

    def round_done(self, p: CellProgress, round_index: int, finished: bool) -> None:
        self.progress.update(self.task, description=f"{p.cell.label()} round {round_index + 1}")
        self.live.update(self._render())

    def finish(self, p: CellProgress) -> None:
        median, interval, tokens = _cell_text(p)
        status = p.status + (" (short)" if p.stopped_short and not p.failed else "")
        self.rows.append((p.cell.model, p.cell.backend, p.cell.mode, str(p.cell.seq_len), median, interval, str(p.rounds_done), tokens, status))
        self.progress.advance(self.task)
        self.live.update(self._render())


