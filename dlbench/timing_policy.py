"""The timing warnings as pure functions of numbers, importable without JAX.

``dlbench.timing`` (which imports JAX) measures and attaches these warnings to its rows;
``dlbench.report`` prints them for rows read back from disk. One definition for both.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

SLOW_FIRST_FACTOR = 3.0  # warn when the first call takes this many times the median of the repeats
OUTLIER_IQR = 3.0  # outlier fences at Q1 - 3 IQR and Q3 + 3 IQR (hyperfine-like)


def quartiles(samples: Sequence[float]) -> tuple[float, float, float]:
    """(Q1, median, Q3) with linear interpolation between order statistics (numpy's default)."""
    xs = sorted(samples)
    if not xs:
        raise ValueError("no samples")
    if len(xs) == 1:
        return xs[0], xs[0], xs[0]
    q1, median, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    return q1, median, q3


def timing_warnings(
    first_call_s: Sequence[float],
    repeats_s: Sequence[float],
    *,
    slow_first_factor: float = SLOW_FIRST_FACTOR,
    outlier_iqr: float = OUTLIER_IQR,
) -> list[str]:
    """Warnings a reader of the numbers should see: a slow first call (the first of ``first_call_s``
    beyond ``slow_first_factor`` x the median of ``repeats_s``) and outliers among the repeats
    (beyond ``outlier_iqr`` IQRs from the quartiles; needs at least 4 repeats and a non-zero IQR)."""
    if not repeats_s:
        return []
    found = []
    q1, median, q3 = quartiles(repeats_s)
    if first_call_s and median > 0 and first_call_s[0] > slow_first_factor * median:
        found.append(f"slow first run: {first_call_s[0] / median:.1f}x the median")
    iqr = q3 - q1
    outliers = sum(1 for x in repeats_s if x > q3 + outlier_iqr * iqr or x < q1 - outlier_iqr * iqr)
    if len(repeats_s) >= 4 and iqr > 0 and outliers:
        found.append(f"{outliers} outlier(s) beyond {outlier_iqr:g} IQR")
    return found
