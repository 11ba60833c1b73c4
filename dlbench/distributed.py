"""Scaling out on JAX's own runtime: device meshes, sharding helpers, multi-host start-up, suite shards.

Nothing here launches processes: several devices are one process's mesh (``jax.jit`` with
``NamedSharding``, one code path for 1 and N devices), several hosts are JAX's multi-controller runtime
(``jax.distributed.initialize``, started by the cluster's scheduler: one ``dlbench`` per process), and
a cluster sweep is ``dlbench run SUITE --shard I/N`` per array task, combined by ``dlbench merge``.

Vocabulary: DATA is the mesh axis the batch is split over (data parallelism: parameters replicated,
gradients all-reduced by XLA, BatchNorm statistics over the global batch); SEQ is the axis a sequence
is split over (sequence parallelism of the scan, :func:`dlbench.layers.kernels.scan.sharded_linear_scan`).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence
from typing import TypeVar

from dlbench.errors import DlbenchError

DATA = "data"
SEQ = "seq"
_T = TypeVar("_T")


# --- multi-host start-up ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ClusterConfig:
    """How this process joins a multi-process JAX job (all None: a single process, unless auto-detected).

    ``coordinator`` is HOST:PORT of process 0; ``num_processes`` and ``process_id`` as in
    ``jax.distributed.initialize``. The standard variables ``JAX_COORDINATOR_ADDRESS``,
    ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` fill options left out; on SLURM (``SLURM_JOB_ID`` and
    more than one task in ``SLURM_NTASKS``) ``jax.distributed.initialize()`` detects everything itself.
    """

    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None

    def resolved(self) -> ClusterConfig:
        env = os.environ
        coordinator = self.coordinator or env.get("JAX_COORDINATOR_ADDRESS") or None
        num = self.num_processes if self.num_processes is not None else _env_int("JAX_NUM_PROCESSES")
        pid = self.process_id if self.process_id is not None else _env_int("JAX_PROCESS_ID")
        return ClusterConfig(coordinator, num, pid)

    def check(self) -> None:
        if self.coordinator is not None and not re.fullmatch(r"\[?[\w.:\-]+\]?:\d+", self.coordinator):
            raise DlbenchError(f"bad --coordinator {self.coordinator!r}: expected HOST:PORT, e.g. 10.0.0.1:1234")
        if self.num_processes is not None and self.num_processes < 1:
            raise DlbenchError(f"bad --num-processes {self.num_processes}: must be >= 1")
        if self.process_id is not None and self.num_processes is not None and not 0 <= self.process_id < self.num_processes:
            raise DlbenchError(f"bad --process-id {self.process_id}: must be in [0, {self.num_processes})")
        given = [x is not None for x in (self.coordinator, self.num_processes, self.process_id)]
        if any(given) and not all(given) and (self.num_processes or 1) > 1:
            raise DlbenchError("multi-process runs need --coordinator, --num-processes and --process-id together "
                               "(or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID, or SLURM)")


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise DlbenchError(f"${name}={value!r} is not an integer") from None


def on_slurm_job() -> bool:
    """True inside a multi-task SLURM step, where ``jax.distributed.initialize()`` auto-detects the cluster."""
    env = os.environ
    tasks = env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS") or "1"
    return "SLURM_JOB_ID" in env and tasks.isdigit() and int(tasks) > 1


_INITIALIZED = False


def initialize(config: ClusterConfig = ClusterConfig()) -> bool:
    """Join the multi-process job described by ``config``, the environment or SLURM; no-op for one process.

    Must run before anything touches a JAX device. Returns True when this process is part of a
    multi-process job. CPU processes exchange data through gloo collectives.
    """
    global _INITIALIZED
    config = config.resolved()
    config.check()
    explicit = config.coordinator is not None and (config.num_processes or 1) > 1
    if _INITIALIZED:
        return True
    if not explicit and not on_slurm_job():
        return False
    import jax

    try:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except (AttributeError, ValueError):  # older/newer jax without the option: its default applies
        pass
    try:
        if explicit:
            jax.distributed.initialize(config.coordinator, config.num_processes, config.process_id)
        else:
            jax.distributed.initialize()  # SLURM: coordinator, count and id from the job's variables
    except (RuntimeError, ValueError) as error:
        raise DlbenchError(f"jax.distributed.initialize failed: {str(error).splitlines()[0]}") from None
    _INITIALIZED = True
    return True


def process_index() -> int:
    import jax

    return jax.process_index()


def is_writer() -> bool:
    """Only process 0 writes result rows and files; the others compute and stay silent."""
    return process_index() == 0


def agree_on(text: str, length: int = 64) -> str:
    """Process 0's ``text`` on every process (``broadcast_one_to_all``); ``text`` itself for one process.

    Used for the run id so every process of one job labels its work the same way.
    """
    import jax

    if jax.process_count() == 1:
        return text
    import numpy as np
    from jax.experimental import multihost_utils

    raw = text.encode()[:length].ljust(length, b"\0")
    got = multihost_utils.broadcast_one_to_all(np.frombuffer(raw, np.uint8).copy())
    return bytes(np.asarray(got, np.uint8)).rstrip(b"\0").decode()


def barrier(name: str) -> None:
    """Wait until every process gets here (no-op for one process)."""
    import jax

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


# --- meshes and sharding -----------------------------------------------------------------------------


def resolve_devices(requested: int | None, *, divides: int | None = None) -> int:
    """How many devices a mesh uses: ``requested`` (checked), or all of them (every process's).

    With ``divides`` (the batch) and no request, the largest count that divides it, so a default
    never fails on an odd batch; an explicit count that does not divide it is an error.
    """
    import jax

    available = jax.device_count()
    if requested is None:
        n = available
        if divides:
            while divides % n:
                n -= 1
        return n
    if requested < 1 or requested > available:
        raise DlbenchError(f"--devices {requested}: must be in [1, {available}] ({available} {jax.default_backend()} device(s) visible)")
    if jax.process_count() > 1 and requested != available:
        raise DlbenchError(f"--devices {requested}: a multi-process job uses every device ({available})")
    if divides and divides % requested:
        raise DlbenchError(f"batch {divides} is not divisible by --devices {requested}")
    return requested


def make_mesh(n: int | None = None, axis: str = DATA):
    """A 1-D mesh over the first ``n`` devices (all when None), named ``axis``."""
    import jax
    import numpy as np
    from jax.sharding import Mesh

    devices = jax.devices()
    n = len(devices) if n is None else n
    return Mesh(np.array(devices[:n]), (axis,))


def batch_sharding(mesh, ndim: int, axis: int = 0):
    """``NamedSharding`` that splits array axis ``axis`` over the mesh's (single) axis."""
    from jax.sharding import NamedSharding, PartitionSpec

    spec = [None] * ndim
    spec[axis] = mesh.axis_names[0]
    return NamedSharding(mesh, PartitionSpec(*spec))


def replicated(mesh):
    from jax.sharding import NamedSharding, PartitionSpec

    return NamedSharding(mesh, PartitionSpec())


def put(tree: _T, sharding_of) -> _T:
    """Place host or device arrays as global arrays: ``sharding_of(leaf)`` gives each leaf's sharding.

    Every process holds the same full value (data come from seeded, deterministic loaders), so each
    one fills its own devices' shards (``make_array_from_callback``); this works for one process and many.
    """
    import jax
    import numpy as np

    def place(x):
        if x is None:
            return None
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            # Typed PRNG keys (dropout streams) travel as their raw key data.
            data = place(jax.random.key_data(x))
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
        host = np.asarray(x)
        sharding = sharding_of(host)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree_util.tree_map(place, tree)


def put_batch(mesh, tree: _T) -> _T:
    """Split every leaf's leading (batch) axis over ``mesh``."""
    return put(tree, lambda x: batch_sharding(mesh, x.ndim))


def put_replicated(mesh, tree: _T) -> _T:
    return put(tree, lambda x: replicated(mesh))


# --- cluster sweeps: --shard I/N ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count``: the runs at positions index, index + count, ... of the sorted run list."""

    index: int = 0
    count: int = 1

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def select(self, items: Sequence[_T], key=None) -> list[_T]:
        """This shard's items, keeping ``items``' order; membership is fixed by the sort on ``key``."""
        ordered = sorted(range(len(items)), key=(lambda i: key(items[i])) if key else (lambda i: items[i]))
        mine = {i for rank, i in enumerate(ordered) if rank % self.count == self.index}
        return [item for i, item in enumerate(items) if i in mine]


def parse_shard(text: str | None) -> Shard | None:
    """``"1/3"`` -> Shard(1, 3); None stays None; anything else is a one-line error."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise DlbenchError(f"bad --shard {text!r}: expected I/N with 0 <= I < N, e.g. 0/4")
    index, count = int(match[1]), int(match[2])
    if count < 1 or not 0 <= index < count:
        raise DlbenchError(f"bad --shard {text!r}: need 0 <= I < N and N >= 1")
    return Shard(index, count)


def shard_label(shard: Shard | None) -> str:
    return "" if shard is None or shard.count == 1 else f"shard{shard.index}of{shard.count}"


__all__ = [
    "ClusterConfig",
    "Shard",
    "agree_on",
    "batch_sharding",
    "initialize",
    "is_writer",
    "make_mesh",
    "parse_shard",
    "put",
    "put_batch",
    "put_replicated",
    "replicated",
    "resolve_devices",
]
