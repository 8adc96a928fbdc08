"""Units of work as Ray tasks: one per unit, a GPU each where the cluster has GPUs, retried if a worker dies.

Ray is optional (``pip install -e '.[ray]'``); it is imported only when a :class:`RayExecutor` runs.
Imports only ``errors``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from ..errors import SNAError

_WORKER: dict = {}  # in a Ray worker process: the current sweep's shared objects and per-process cache


def import_ray():
    """The ``ray`` module, or an SNAError saying how to install it."""
    try:
        import ray
    except ImportError as e:
        raise SNAError("executor='ray' needs Ray: pip install -e '.[ray]' (or pip install 'ray[default]').") from e
    return ray


@dataclass(frozen=True)
class RayExecutor:
    """Where and how units run on Ray.

    ``address``: None joins the cluster in ``RAY_ADDRESS`` if set, else starts a local one on this machine
    (with ``num_cpus`` CPUs if given); ``"auto"`` or ``"ray://host:10001"`` joins an existing cluster.
    ``gpus_per_unit``: None gives each unit one GPU where the cluster has GPUs, none where it has none;
    0.5 packs two units per GPU. ``max_retries``: how often a unit whose worker died is run again.
    """

    address: str | None = None
    num_cpus: int | None = None
    gpus_per_unit: float | None = None
    max_retries: int = 3

    def connect(self):
        """Ray, initialised (once per process) with this executor's address."""
        ray = import_ray()
        if not ray.is_initialized():
            kwargs = {} if self.num_cpus is None or self.address else dict(num_cpus=self.num_cpus)
            ray.init(address=self.address, log_to_driver=False, **kwargs)
        return ray

    def map(self, fn: Callable[[Any, Any, dict], Any], shared: Any, items: Sequence[Any],
            on_result: Callable[[Any, Any], None]) -> None:
        """``fn(shared, item, cache)`` for every item as a Ray task; ``on_result(item, result)`` as each ends.

        ``shared`` is stored once in the object store; each worker process reads it once and keeps a
        ``cache`` dict beside it for the later tasks it runs. Results arrive in completion order.
        """
        ray = self.connect()
        gpus = self.gpus_per_unit
        if gpus is None:
            gpus = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
        task = ray.remote(_run_task).options(num_cpus=1, num_gpus=gpus, max_retries=self.max_retries,
                                             retry_exceptions=False)
        ref = ray.put(shared)
        pending = {task.remote(fn, [ref], item): item for item in items}
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for r in ready:
                    on_result(pending.pop(r), ray.get(r))
        finally:
            for r in pending:  # interrupted: stop what is still queued (finished units are on disk)
                ray.cancel(r)


def _run_task(fn: Callable, boxed_ref: list, item: Any) -> Any:
    """Inside a Ray worker: fetch the shared objects once per process (the ref is boxed so Ray passes it as is)."""
    import ray

    key = boxed_ref[0].hex()
    if _WORKER.get("key") != key:
        _WORKER.clear()
        _WORKER.update(key=key, shared=ray.get(boxed_ref[0]), cache={})
    return fn(_WORKER["shared"], item, _WORKER["cache"])


def as_executor(executor: str | RayExecutor | None) -> RayExecutor | None:
    """None (this process), ``"ray"`` (a default :class:`RayExecutor`) or an executor; anything else raises."""
    if executor is None:
        return None
    if isinstance(executor, RayExecutor) or executor == "ray":
        import_ray()  # before any work
        return executor if isinstance(executor, RayExecutor) else RayExecutor()
    raise SNAError(f"executor={executor!r}: use None (this process), 'ray' or su.RayExecutor(...).")
