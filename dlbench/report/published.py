"""Published numbers (docs/models.md), shown beside reproductions in every leaderboard."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping


@dataclasses.dataclass(frozen=True)
class Reference:
    """Published results of one task: the metric, how measured values map to the paper's units
    (``display = value * scale``), and per model (mean, std) in those units (std None if unpublished)."""

    metric: str
    scale: float
    unit: str
    values: Mapping[str, tuple[float, float | None]]
    source: str


def _uea(*pairs: tuple[str, float, float]) -> dict[str, tuple[float, float]]:
    return {model: (mean, std) for model, mean, std in pairs}


_UEA_TABLE = {  # model: per dataset (mean, std), order EigenWorms/SCP1/SCP2/Ethanol/Heartbeat/Motor
    "dlinoss": ((93.9, 3.2), (88.9, 3.0), (58.6, 2.3), (29.9, 0.6), (75.8, 4.9), (61.1, 2.0)),
    "linoss-im": ((95.0, 4.4), (87.8, 2.6), (58.2, 6.9), (29.9, 0.6), (75.8, 3.7), (60.0, 7.5)),
    "linoss-imex": ((80.0, 2.7), (87.5, 4.0), (58.9, 8.1), (29.9, 1.0), (75.5, 4.3), (57.9, 5.3)),
    "s5": ((81.1, 3.7), (89.9, 4.6), (50.5, 2.6), (24.1, 4.3), (77.7, 5.5), (47.7, 5.5)),
    "lru": ((87.8, 2.8), (82.6, 3.4), (51.2, 3.6), (21.5, 2.1), (78.4, 6.7), (48.4, 5.0)),
    "mamba": ((70.9, 15.8), (80.7, 1.4), (48.2, 3.9), (27.9, 4.5), (76.2, 3.8), (47.7, 4.5)),
    "s6": ((85.0, 16.1), (82.8, 2.7), (49.9, 9.4), (26.4, 6.4), (76.5, 8.3), (51.3, 4.7)),
}
_UEA_DATASETS = (
    "EigenWorms", "SelfRegulationSCP1", "SelfRegulationSCP2", "EthanolConcentration", "Heartbeat", "MotorImagery",
)  # fmt: skip
_PAPERS = "D-LinOSS (arXiv 2505.12171) and LinOSS (arXiv 2410.03943) tables; docs/models.md"

PUBLISHED: dict[str, Reference] = {
    **{
        dataset: Reference(
            "test_accuracy", 100.0, "%", {m: scores[i] for m, scores in _UEA_TABLE.items()}, _PAPERS
        )
        for i, dataset in enumerate(_UEA_DATASETS)
    },
    "PPG-DaLiA": Reference(
        "test_mse",
        100.0,
        "1e-2",
        {
            "dlinoss": (6.16, 0.73), "linoss-im": (6.4, 0.23), "linoss-imex": (7.5, 0.46), "mamba": (10.65, 2.20),
            "lru": (12.17, 0.49), "s5": (12.63, 1.25), "s6": (12.88, 2.05),
        },  # fmt: skip
        _PAPERS,
    ),
    # The decay task's numbers are read off the D-LinOSS paper's text (~), without a std.
    "decay": Reference("test_rmse", 1000.0, "1e-3", {"dlinoss": (0.8, None), "linoss-im": (8.0, None)}, _PAPERS),
    # Weather forecasting (Informer WTH), test MAE on the normalised scale; no std is published.
    "weather": Reference(
        "test_mae", 1.0, "", {"dlinoss": (0.486, None), "linoss-imex": (0.508, None), "linoss-im": (0.528, None)},
        "D-LinOSS (arXiv 2505.12171) and LinOSS (arXiv 2410.03943) weather tables; docs/models.md",
    ),
}
# Other spellings of task names found in suites and user files -> the key of PUBLISHED.
TASK_ALIASES = {
    "ppg": "PPG-DaLiA", "ppg-dalia": "PPG-DaLiA", "ppg_dalia": "PPG-DaLiA", "scp1": "SelfRegulationSCP1",
    "scp2": "SelfRegulationSCP2", "ethanol": "EthanolConcentration", "motor": "MotorImagery",
    **{name.casefold(): name for name in PUBLISHED},
}  # fmt: skip
# How a metric is displayed when no published reference fixes the scale.
DISPLAY_SCALES: dict[str, tuple[float, str]] = {"test_accuracy": (100.0, "%"), "val_accuracy": (100.0, "%")}


def published(task: str, model: str, metric: str) -> tuple[Reference | None, tuple[float, float | None] | None]:
    """The published reference for ``task`` (if its metric is ``metric``) and the model's entry."""
    reference = PUBLISHED.get(TASK_ALIASES.get(task.casefold(), task))
    if reference is None or reference.metric != metric:
        return None, None
    return reference, reference.values.get(model)

