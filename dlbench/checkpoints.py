"""Training checkpoints (orbax-checkpoint): mid-run resume, and the best parameters of finished runs.

Layout, one folder per cell under the run directory::

    RUN_DIR/checkpoints/<task>/<model>/seed<seed>/
        model.json             the model name and its ModelConfig (to rebuild it without the suite)
        state/<step>/          orbax CheckpointManager, latest kept: "state" (model + optimiser state),
                               "best" (best-validation model state), "meta" (loop bookkeeping, the run's rows)
        best/<step>/           the best-validation model state of a finished run (saved at its end)

Arrays are stored as a flat list of leaves (``l00000`` ...) in the order of ``jax.tree.leaves`` of the
(nnx) state; restoring unflattens them into the structure of a freshly built model, so nnx's integer
keys and typed PRNG keys (dropout streams, stored as their raw key data) need no special format.

Python API: :func:`load_run_params` returns a finished run's model with its best-validation parameters.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from dlbench.config import to_dict
from dlbench.errors import DlbenchError

CHECKPOINTS = "checkpoints"


def cell_dir(root: str | Path, task: str, model: str, seed: int) -> Path:
    """``root/<task>/<model>/seed<seed>``: where one cell's checkpoints live."""
    return Path(root) / task / model / f"seed{seed}"


def _leaves(tree) -> dict[str, Any]:
    import jax
    import numpy as np

    out = {}
    for k, leaf in enumerate(jax.tree.leaves(tree)):
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        out[f"l{k:05d}"] = np.asarray(leaf)
    return out


def _unflatten(template, saved: dict[str, Any]):
    """``saved`` leaves in the structure (and key types) of ``template``."""
    import jax
    import numpy as np

    leaves, treedef = jax.tree.flatten(template)
    if len(saved) != len(leaves):
        raise DlbenchError(f"checkpoint has {len(saved)} arrays, the model has {len(leaves)}: a different model or config")
    out = []
    for k, leaf in enumerate(leaves):
        value = np.asarray(saved[f"l{k:05d}"])
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            out.append(jax.random.wrap_key_data(value, impl=jax.random.key_impl(leaf)))
        else:
            if value.shape != leaf.shape:
                raise DlbenchError(f"checkpoint array {k} has shape {value.shape}, the model expects {leaf.shape}")
            out.append(value.astype(leaf.dtype))
    return jax.tree.unflatten(treedef, out)


def _manager(path: Path):
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(max_to_keep=1, enable_async_checkpointing=False, create=True)
    return ocp.CheckpointManager(path.absolute(), options=options)


class RunCheckpointer:
    """Saves and restores one cell's checkpoints (see the module docstring for the layout).

    Args:
      root: RUN_DIR/checkpoints.
      task, model, seed: the cell.
      model_name, config: what :func:`load_run_params` rebuilds (a :class:`dlbench.models.ModelConfig`).
      fresh: delete this cell's earlier checkpoints (a run that starts from step 0).
    """

    def __init__(self, root, task: str, model: str, seed: int, *, model_name: str, config, fresh: bool):
        self.dir = cell_dir(root, task, model, seed)
        if fresh and self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "model.json").write_text(json.dumps({"model": model_name, "config": to_dict(config)},
                                                        indent=1, sort_keys=True))
        self._state = None

    def _state_manager(self):
        if self._state is None:
            self._state = _manager(self.dir / "state")
        return self._state

    def save(self, step: int, state, best_model, meta: dict[str, Any]) -> None:
        """Checkpoint at evaluation ``step``: the full state, the best model state and ``meta`` (JSON)."""
        import orbax.checkpoint as ocp

        manager = self._state_manager()
        manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(_leaves(state)),
                                                   best=ocp.args.StandardSave(_leaves(best_model)),
                                                   meta=ocp.args.JsonSave(meta)), force=True)
        manager.wait_until_finished()

    def restore(self, template_state):
        """(state, best model state, meta) of the last checkpoint, placed like ``template_state``; None if none."""
        import jax
        import orbax.checkpoint as ocp

        if not (self.dir / "state").is_dir():
            return None
        manager = self._state_manager()
        step = manager.latest_step()
        if step is None:
            return None
        got = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(), best=ocp.args.StandardRestore(),
                                                            meta=ocp.args.JsonRestore()))
        state = _unflatten(template_state, got["state"])
        best = _unflatten(template_state[0], got["best"])
        # Same placement as the template (replicated over the run's mesh).
        state = jax.tree.map(lambda v, t: jax.device_put(v, t.sharding), state, template_state)
        best = jax.tree.map(lambda v, t: jax.device_put(v, t.sharding), best, template_state[0])
        return state, best, dict(got["meta"])

    def save_best(self, step: int, best_model, meta: dict[str, Any]) -> None:
        """The best-validation model state of a finished run, kept for :func:`load_run_params`."""
        import orbax.checkpoint as ocp

        # A rerun of a finished run whose rows were trimmed replaces the earlier best (same step).
        shutil.rmtree(self.dir / "best", ignore_errors=True)
        manager = _manager(self.dir / "best")
        manager.save(step, args=ocp.args.Composite(best=ocp.args.StandardSave(_leaves(best_model)),
                                                   meta=ocp.args.JsonSave(meta)), force=True)
        manager.wait_until_finished()
        manager.close()


def load_run_params(run_dir: str | Path, model: str, task: str, seed: int):
    """The finished run's model (rebuilt with the run's config) holding its best-validation parameters.

    Args:
      run_dir: the run directory (``dlbench run --out``), which holds ``checkpoints/``.
      model, task, seed: the cell.
    Returns:
      a :class:`dlbench.models.SequenceModel` in eval mode.
    """
    import orbax.checkpoint as ocp
    from flax import nnx

    from dlbench.models import ModelConfig, build_model

    where = cell_dir(Path(run_dir) / CHECKPOINTS, task, model, seed)
    if not (where / "best").is_dir():
        raise DlbenchError(f"no best parameters for {task}/{model}/seed {seed} under {where} (unfinished run, "
                           "or one from before checkpoints)")
    info = json.loads((where / "model.json").read_text())
    built = build_model(info["model"], ModelConfig(**info["config"]), seed=seed)
    manager = _manager(where / "best")
    step = manager.latest_step()
    if step is None:
        raise DlbenchError(f"{where / 'best'} holds no finished checkpoint")
    got = manager.restore(step, args=ocp.args.Composite(best=ocp.args.StandardRestore()))
    manager.close()
    graphdef, template = nnx.split(built)
    built = nnx.merge(graphdef, _unflatten(template, got["best"]))
    built.eval()
    return built


__all__ = ["CHECKPOINTS", "RunCheckpointer", "cell_dir", "load_run_params"]
