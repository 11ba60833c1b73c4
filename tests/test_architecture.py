"""The layering of dlbench (README "Architecture"): each module imports only from its own layer or below.

Every ``import`` and ``from ... import`` of every module counts, module level and inside functions
alike, so a lazy import cannot hide an upward dependency. The report package is a leaf above the
rows: it may import only the bottom layer (errors, config, the run directory, the JAX-free timing
policy) and itself, never a loop, a model or JAX.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dlbench"

# Bottom to top. A module's layer is that of the longest prefix listed here.
LAYERS = (
    ("foundation", ("dlbench.errors", "dlbench.config", "dlbench.registry", "dlbench.rundir", "dlbench.timing_policy",
                    "dlbench.distributed", "dlbench.host_memory")),
    ("kernels", ("dlbench.layers.kernels",)),
    ("layers", ("dlbench.layers", "dlbench.plugins")),
    ("models and tasks", ("dlbench.models", "dlbench.tasks")),
    ("loops and analyses", ("dlbench.timing", "dlbench.train", "dlbench.checkpoints", "dlbench.eigen", "dlbench.check",
                            "dlbench.cells")),
    ("orchestration", ("dlbench.profile", "dlbench.scan_cell", "dlbench.rounds", "dlbench.suite", "dlbench.merge", "dlbench.catalog")),
    ("reports", ("dlbench.report",)),
    ("command line", ("dlbench.cli", "dlbench.launch")),
)
REPORT_MAY_IMPORT = ("foundation", "reports")
THIRD_PARTY_FORBIDDEN_IN_REPORTS = ("jax", "jaxlib", "flax", "optax", "orbax")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int | None:
    best, rank = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), i
    return rank


def imports(path: Path) -> set[str]:
    """Every module a file imports (``from dlbench import x`` names the submodule x where it is one)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES)
    return found


def test_every_module_has_a_layer():
    assert [m for m in MODULES if m != "dlbench" and layer_of(m) is None] == []


@pytest.mark.parametrize("module", [m for m in MODULES if m != "dlbench"])
def test_imports_go_down_only(module):
    mine = layer_of(module)
    upward = []
    for target in imports(MODULES[module]):
        if not target.startswith("dlbench.") or target == module:
            continue
        theirs = layer_of(target)
        if LAYERS[mine][0] == "reports":
            if LAYERS[theirs][0] not in REPORT_MAY_IMPORT:
                upward.append(f"{target} ({LAYERS[theirs][0]})")
        elif theirs > mine:
            upward.append(f"{target} ({LAYERS[theirs][0]})")
    assert upward == [], f"{module} ({LAYERS[mine][0]}) imports from above: {upward}"


@pytest.mark.parametrize("module", [m for m in MODULES if m.startswith("dlbench.report")])
def test_reports_import_no_jax(module):
    heavy = sorted(t for t in imports(MODULES[module]) if t.split(".")[0] in THIRD_PARTY_FORBIDDEN_IN_REPORTS)
    assert heavy == []


def test_the_check_catches_an_upward_import(tmp_path):
    # The test itself can fail: a kernel importing the training loop is reported.
    fake = tmp_path / "bad.py"
    fake.write_text("from dlbench.train import train_run\n")
    assert "dlbench.train" in imports(fake) and layer_of("dlbench.train") > layer_of("dlbench.layers.kernels.scan")
