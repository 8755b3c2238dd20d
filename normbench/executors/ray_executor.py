"""The Ray executor (``--executor ray [--ray-address auto|ray://host:port]``).

The same work units as the local executor, on a Ray cluster: one actor per GPU
of the cluster, each requesting ``num_gpus=1`` (Ray pins it with
``CUDA_VISIBLE_DEVICES``), each holding a ``WorkerCore`` (own copy-bandwidth
measurement, the suite's providers imported before its first answer, the
compile caches of its node's user, ``device_info`` on every record, with the
node's host name, the GPU's model and the actor's start-up time, so
heterogeneous clusters are recorded case by case; the run's environment names
this host's compile caches). An actor
streams its records back as it finishes them (a Ray streaming generator); this
process alone records them. An actor that dies (node lost, process killed)
fails its in-flight case with Ray's reason and is replaced; Ctrl-C kills the
actors and keeps the run resumable, as with ``--gpus``.

``--ray-address``: none starts a local Ray (all GPUs of this host); ``auto``
joins the cluster this node belongs to; ``ray://host:port`` uses Ray Client.
``--accelerator-type H100`` places actors only on nodes with that GPU type
(Ray's ``accelerator_type``, the ``accelerator_type:H100`` node resource);
without it a heterogeneous cluster is used whole, and every record names the
GPU it ran on (``compare --strict`` then matches cases only on the same GPU
model).
Every node needs normbench (and the providers the suite uses) installed.
``--gpus N`` caps the number of actors.

Tests replace GPUs with a custom resource (``NORMBENCH_RAY_GPU_RESOURCE=fake_gpu``
and ``ray.init(resources={"fake_gpu": 2})``): those actors request one unit of
it, hide CUDA and run on the CPU, labelled ``fake_gpu:K``.

Errors: ``NormbenchError`` when ray is not installed (with ``pip install
'normbench[ray]'``), when Ray cannot connect, or when the cluster has none of
the resource.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Sequence

from normbench.errors import NormbenchError
from normbench.executors import RAY_INSTALL_HINT, RAY_RESOURCE_ENV, ExecOptions, WorkUnit, warm_modules
from normbench.executors import pool
from normbench.executors.pool import Scheduler, Slot

#: Seconds to wait for an actor's first answer (start-up, bandwidth measurement).
READY_TIMEOUT_S = 600.0


def import_ray() -> Any:
    """``import ray``, or the install command as a ``NormbenchError``."""
    try:
        import ray
    except ImportError:
        raise NormbenchError(f"--executor ray needs Ray, which is not installed: {RAY_INSTALL_HINT}") from None
    return ray


def run(units: Sequence[WorkUnit], ctx: Any, options: ExecOptions,
        on_workers: Callable[[int, int], None] | None = None, role: str = "kernel",
        ports: Sequence[int] | None = None) -> None:
    """Run ``units`` on Ray actors, one per GPU (or per unit of ``options.ray_resource``).

    Kernel units get one actor per GPU; end-to-end units (``role="e2e"``, all
    of one size ``units[0].gpus``) one actor per lane, each requesting that
    many GPUs and owning ``ports[k]`` for its ``vllm serve``. With
    ``options.accelerator_type`` (e.g. ``H100``) actors go only to nodes with
    that GPU type (Ray's ``accelerator_type``).

    Raises:
        NormbenchError: no ray; Ray would not start or connect; no such resource
            (or GPU type) in the cluster; a runner's user error; every actor
            died at start-up.
        KeyboardInterrupt: after the actors were killed (the run is resumable).
    """
    ray = import_ray()
    started_here = False
    if not ray.is_initialized():
        try:
            ray.init(address=options.ray_address, log_to_driver=False, include_dashboard=False)
        except Exception as e:  # noqa: BLE001 - Ray raises many kinds; the user needs the message
            where = options.ray_address or "a local Ray"
            raise NormbenchError(f"--executor ray: could not start or join {where}: {type(e).__name__}: {e}") from e
        started_here = True
    try:
        resource = options.ray_resource
        if resource in ("CPU", "memory", "object_store_memory"):
            raise NormbenchError(f"{RAY_RESOURCE_ENV}={resource}: name GPU or a custom resource standing in for GPUs")
        have = available(ray, resource, options.accelerator_type)
        size = max((u.gpus for u in units), default=1)
        lanes = have // size
        if options.gpus and options.gpus != "all":
            lanes = min(lanes, int(options.gpus) // size)
        if role == "e2e":
            lanes = min(lanes, len(units))
        if lanes < 1:
            raise NormbenchError(f"--executor ray: each worker needs {size} {resource!r}; the cluster has {have}")
        actor_cls = _actor_class(ray)
        init = {"suite": ctx.suite, "environment": dict(ctx.environment), "run_dir": str(ctx.run_dir),
                "debug": bool(ctx.debug), "extra": dict(ctx.extra)}
        warm = warm_modules(ctx.suite, resource != "GPU") if role == "kernel" else None

        def make_slot(k: int, events: Any) -> Slot:
            port = ports[k] if ports else None
            return RaySlot(ray, actor_cls, k, resource, {**init, "port": port}, events, role=role, gpus=size,
                           accelerator_type=options.accelerator_type, warm=warm)

        Scheduler(ctx, list(range(lanes)), make_slot, on_workers, start_together=resource != "GPU").run(units)
    finally:
        if started_here:
            ray.shutdown()


def available(ray: Any, resource: str, accelerator_type: str | None = None) -> int:
    """How many units of ``resource`` the cluster has (on nodes with ``accelerator_type``, when given).

    Raises:
        NormbenchError: none at all, or no node of that GPU type (the message
            lists the types the cluster has).
    """
    if accelerator_type is None:
        have = int(ray.cluster_resources().get(resource, 0))
        if have < 1:
            raise NormbenchError(
                f"--executor ray: the Ray cluster has no {resource!r} resource "
                f"({'no GPU' if resource == 'GPU' else 'none'} registered); its resources: "
                f"{', '.join(sorted(ray.cluster_resources())) or 'none'}"
            )
        return have
    key = f"accelerator_type:{accelerator_type}"
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    have = int(sum(n.get("Resources", {}).get(resource, 0) for n in nodes if key in n.get("Resources", {})))
    if have < 1:
        types = sorted({r.split(":", 1)[1] for n in nodes for r in n.get("Resources", {}) if r.startswith("accelerator_type:")})
        raise NormbenchError(f"--accelerator-type {accelerator_type}: no node of the Ray cluster has that GPU type "
                             f"with {resource!r}; types there: {', '.join(types) or 'none registered'}")
    return have


_ACTOR: Any = None


def _actor_class(ray: Any) -> Any:
    """The Ray actor class (built on first use, so this module imports without ray)."""
    global _ACTOR
    if _ACTOR is None:

        class NormbenchWorker:
            """A ``WorkerCore`` in a Ray actor; ``run_unit`` yields its messages as they come."""

            def __init__(self, device: dict[str, Any], init: dict[str, Any]):
                from normbench.executors.worker import WorkerCore

                if not device.get("fake"):
                    import socket

                    import ray as _ray

                    ids = [str(i) for i in _ray.get_gpu_ids()]
                    index = int(ids[0]) if ids and ids[0].isdigit() else device.get("index")
                    device = {**device, "index": index, "label": f"{socket.gethostname()}:cuda:{','.join(ids) or index}"}
                self._queue: Any = None
                self.core = WorkerCore(device, self._send)
                self.core.configure(init)

            def info(self) -> dict[str, Any]:
                return self.core.device_info

            def _send(self, msg: tuple) -> None:
                if self._queue is not None:
                    self._queue.put(msg)

            def run_unit(self, unit: Any):
                # The runner reports through a callback; a thread lets this generator
                # yield each message as it is produced instead of at the end.
                import queue as _queue

                q: _queue.Queue = _queue.Queue()
                self._queue = q
                t = threading.Thread(target=self.core.run_unit, args=(unit,), daemon=True)
                t.start()
                while True:
                    msg = q.get()
                    yield msg
                    if msg[0] == "done":
                        break
                t.join()
                self._queue = None

        _ACTOR = ray.remote(NormbenchWorker)
    return _ACTOR


class RaySlot(Slot):
    """One Ray actor holding one GPU (or one unit of a stand-in resource)."""

    def __init__(self, ray: Any, actor_cls: Any, k: int, resource: str, init: dict[str, Any], events: Any,
                 role: str = "kernel", gpus: int = 1, accelerator_type: str | None = None,
                 warm: Sequence[str] | None = None):
        fake = resource != "GPU"
        super().__init__(k, f"{resource}:{k}" if fake else f"ray:{k}", events)
        self.ray = ray
        self.device: dict[str, Any] = {"label": self.label, "index": k, "fake": fake, "role": role}
        if warm is not None:
            self.device["warm"] = list(warm)
        self.init = init
        opts: dict[str, Any] = {"num_cpus": 1, "max_restarts": 0}
        if fake:
            opts["resources"] = {resource: gpus}
        else:
            opts["num_gpus"] = gpus
        if accelerator_type:
            opts["accelerator_type"] = accelerator_type
        self.opts = opts
        self.actor_cls = actor_cls
        self.actor: Any = None
        self._stopped = False

    def start(self) -> None:
        self.spawned_at = pool.clock()
        try:
            self.actor = self.actor_cls.options(**self.opts).remote(self.device, self.init)
        except Exception as e:  # noqa: BLE001 - e.g. Ray refusing the options: this worker's death
            self.emit("died", self._reason(e))
            return
        threading.Thread(target=self._wait_ready, daemon=True, name=f"normbench-{self.label}-ready").start()

    def _wait_ready(self) -> None:
        try:
            info = self.ray.get(self.actor.info.remote(), timeout=READY_TIMEOUT_S)
        except Exception as e:  # noqa: BLE001 - any Ray failure is this worker's death
            self.emit("died", self._reason(e))
            return
        self.label = info.get("label", self.label)
        self.emit_ready(info)

    def _reason(self, e: BaseException) -> str:
        text = str(e).strip().splitlines()
        head = text[0] if text else ""
        return f"Ray worker on {self.label} died: {type(e).__name__}: {head}"[:1000]

    def submit(self, unit: WorkUnit) -> None:
        threading.Thread(target=self._drive, args=(unit,), daemon=True, name=f"normbench-{self.label}-unit").start()

    def _drive(self, unit: WorkUnit) -> None:

        try:
            gen = self.actor.run_unit.options(num_returns="streaming").remote(unit)
            for ref in gen:
                if self.emit_worker_message(self.ray.get(ref)) == "done":
                    return
        except Exception as e:  # noqa: BLE001 - the actor (or its node) is gone
            self.emit("died", self._reason(e))
            return
        self.emit("died", f"Ray worker on {self.label}: its unit ended without finishing")

    def stop(self, force: bool = False) -> None:
        if self._stopped or self.actor is None:
            self.emit("died", "stopped")
            return
        self._stopped = True
        try:
            self.ray.kill(self.actor, no_restart=True)
        finally:
            self.emit("died", "stopped")
