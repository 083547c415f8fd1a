"""Where a grid's planned runs train: one after another in this process (the local backend, `compare.run_plan`),
or spread over the workers of a Ray cluster (`RayBackend`), for when one machine is not enough.

With Ray, each worker is an actor that loads the model once, gets the task and the cloze setup once (through
Ray's object store), and trains the runs sent to it one at a time with the same `compare.train_and_score` the
local backend uses; its events and its row stream back as they come (a Ray generator). An actor per worker, not
a task per run: a run is seconds to minutes, and loading the model for each would cost about as much again.
The caller keeps every worker busy, yields events and rows in whatever order they finish, reports a run that
fails in its own row while the others go on, and on Stop sends no further run and lets the running ones end after
their current step, keeping their rows. Ray itself is optional (requirements-ray.txt) and imported only here.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from peftlab.config import Config, setting
from peftlab.errors import PeftlabError

BACKENDS = ("local", "ray")
WAIT_S = 0.2  # how often the caller looks at its stop flag while it waits for the workers


def _ray():
    try:
        import ray
    except ImportError:
        raise PeftlabError(
            "The ray backend needs Ray: pip install -r requirements-ray.txt (or use --backend local)."
        ) from None
    return ray


@dataclass
class RayBackend:
    """Runs on a Ray cluster: `address` of a running one ("auto", "ray://host:10001"), or None for a Ray started on
    this machine. Each worker takes `threads` CPUs (its torch threads) and, with `gpus`, that share of a GPU;
    `workers` defaults to as many as the cluster's CPUs hold (never more than the runs). `save_dir`, a path every
    node can write, receives each trained method as <label>-K<k>-seed<s>.zip; rows carry no weights otherwise.
    A run whose worker dies is tried once more on a new worker (`max_retries`)."""

    address: str | None = None
    threads: int = 1
    gpus: float = 0.0
    workers: int | None = None
    save_dir: str | None = None
    max_retries: int = 1

    def connect(self):
        """Ray, connected to the cluster (started here when there is no address).

        Raises:
            PeftlabError: Ray is not installed, or the cluster at `address` cannot be reached.
        """
        ray = _ray()
        if not ray.is_initialized():
            try:
                ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
            except (ConnectionError, RuntimeError) as exc:
                raise PeftlabError(f"Cannot reach the Ray cluster at {self.address!r}: {exc}") from None
        return ray

    def describe(self) -> str:
        """What the cluster holds, in one line for the app ("Training runs go to Ray (a Ray started here): ...")."""
        ray = self.connect()
        resources = ray.cluster_resources()
        where = self.address or "a Ray started here"
        gpus = f", {resources['GPU']:g} GPUs" if resources.get("GPU") else ""
        return (
            f"Training runs go to Ray ({where}): {resources.get('CPU', 0):g} CPUs{gpus} on {len(ray.nodes())} "
            f"node(s), {self.threads} CPU(s) per worker."
        )

    def worker_count(self, ray, runs: int) -> int:
        if self.workers is not None:
            return max(1, min(self.workers, runs))
        cpus = int(ray.cluster_resources().get("CPU", 1))
        return max(1, min(cpus // self.threads, runs))

    def run(self, lm, task, setup, plan: Sequence, settings, test: Sequence[dict], stop=None) -> Iterator:
        """Train `plan` (compare.PlannedRun) on the cluster: TrainEvents and one GridRow per run, as they come."""
        from peftlab.standard import STEP_COST

        ray = self.connect()
        if self.save_dir:
            Path(self.save_dir).mkdir(parents=True, exist_ok=True)
        flag = ray.remote(_StopFlag).options(num_cpus=0).remote()
        worker_class = ray.remote(RunWorker).options(
            num_cpus=self.threads,
            num_gpus=self.gpus,
            max_restarts=self.max_retries,
            max_task_retries=self.max_retries,
        )
        workers = [
            worker_class.remote(lm.name, lm.model.dtype, self.threads)  # load_lm takes the torch dtype itself
            for _ in range(self.worker_count(ray, len(plan)))
        ]
        shared = [ray.put(task), ray.put(setup), ray.put(settings), ray.put(list(test))]
        # the longest runs first, so that the last ones to finish are short and no worker waits long at the end
        pending = sorted(plan, key=lambda run: -STEP_COST.get(run.config.name, 1.0))
        running, stopped = {}, False  # running: generator -> (worker, run)

        def send(worker) -> None:
            run = pending.pop(0)
            running[worker.train.remote(*shared, run, flag, self.save_dir)] = (worker, run)

        try:
            for worker in workers:
                if pending:
                    send(worker)
            while running:
                if stop is not None and stop.is_set() and not stopped:
                    pending.clear()  # Stop: no further run; the running ones end after their step
                    flag.set.remote()
                    stopped = True
                ready, _ = ray.wait(list(running), num_returns=1, timeout=WAIT_S)
                for stream in ready:
                    worker, run = running[stream]
                    try:
                        item = ray.get(next(stream))
                    except StopIteration:
                        del running[stream]
                        if pending:
                            send(worker)
                        continue
                    except ray.exceptions.RayError as exc:  # the worker died twice, or Ray lost it
                        del running[stream]
                        yield failed_row(run, f"worker lost: {exc}")
                        if pending:  # to the worker restarted in its place, or, if it is gone, one more failed row
                            send(worker)
                        continue
                    yield item
        finally:
            flag.set.remote()
            for worker in workers:
                ray.kill(worker)


class _StopFlag:
    """The caller's Stop, as the workers see it."""

    def __init__(self):
        self.value = False

    def set(self) -> None:
        self.value = True

    def is_set(self) -> bool:
        return self.value


class _RemoteStop:
    """A stop flag for the trainer (it calls `is_set()` once a step) that asks the caller's _StopFlag actor."""

    def __init__(self, ray, flag):
        self.ray, self.flag, self.value = ray, flag, False

    def is_set(self) -> bool:
        if not self.value:
            self.value = self.ray.get(self.flag.is_set.remote())
        return self.value


class RunWorker:
    """One Ray worker: the model loaded once, with torch limited to its CPUs; trains one planned run per call."""

    def __init__(self, model: str, dtype, threads: int):
        import torch

        from peftlab.models import load_lm

        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        self.lm = load_lm(model, dtype=dtype)

    def train(self, task, setup, settings, test, run, flag, save_dir: str | None):
        """The run's TrainEvents, then its GridRow (without weights); a run that raises gives a failed row."""
        import ray

        from peftlab.compare import GridRow, train_and_score
        from peftlab.saving import zip_trained

        try:
            for item in train_and_score(self.lm, task, setup, run, settings, test, _RemoteStop(ray, flag)):
                if isinstance(item, GridRow):
                    saved = None
                    if save_dir and item.trained is not None:
                        saved = str(zip_trained(item.trained, Path(save_dir) / adapter_name(item.values)))
                    item = dataclasses.replace(item, trained=None, saved=saved)  # the weights stay here or in saved
                yield item
        except Exception as exc:  # reported in the run's row; the grid goes on
            yield failed_row(run, f"{type(exc).__name__}: {exc}")


def adapter_name(row: dict) -> str:
    """The file a trained run is saved as: <label>-K<k>-seed<s>.zip (the command line's --save-adapters names)."""
    return f"{row['method']}-K{row['K']}-seed{row['seed']}.zip"


def failed_row(run, reason: str):
    """The GridRow of a run that did not finish: its method, K and seed, no scores, and why in its status."""
    from peftlab.compare import GridRow, _row

    values = _row(run.config.name, run.k, run.seed, {"accuracy": math.nan, "macro_f1": math.nan}, 0, 1)
    values.update(trainable_share=math.nan, status=f"failed: {reason}"[:300], **run.extra)
    return GridRow(values)


@dataclass
class BackendConfig(Config):
    """Where a grid's or a sweep's runs train: here one after another, or on Ray (`RayBackend`)."""

    backend: str = setting(
        "local", "train the runs here, one after another (local), or on Ray workers (ray)", choices=BACKENDS
    )
    address: str | None = setting(None, "Ray cluster address (auto, ray://host:10001); default: a Ray started here")
    workers: int | None = setting(None, "Ray workers (default: as many as the cluster's CPUs hold)", minimum=1)
    worker_threads: int = setting(1, "CPUs (torch threads) of each Ray worker", minimum=1)
    worker_gpus: float = setting(0.0, "GPUs of each Ray worker (0.5: two workers share one)", minimum=0)

    def check_settings(self):
        ray_only = self.address or self.workers or self.worker_gpus or self.worker_threads != 1
        if self.backend == "local" and ray_only:
            raise PeftlabError("The address, workers, worker threads and worker GPUs are settings of the ray backend.")

    def build(self, save_dir: str | None = None) -> RayBackend | None:
        """None for the local backend (`compare.run_plan`'s own loop), else a RayBackend writing to `save_dir`."""
        if self.backend == "local":
            return None
        return RayBackend(self.address, self.worker_threads, self.worker_gpus, self.workers, save_dir)


def backend_from_env() -> RayBackend | None:
    """The app's backend, chosen by whoever runs it: PEFTLAB_BACKEND=ray trains the Soft prompts tab's grids and
    sweeps on Ray (PEFTLAB_RAY_ADDRESS, default a Ray started here; PEFTLAB_RAY_WORKER_THREADS and
    PEFTLAB_RAY_WORKER_GPUS per worker); unset or "local" trains them in the app's process.

    Raises:
        PeftlabError: an unknown backend or a setting out of range.
    """
    return BackendConfig(
        backend=os.environ.get("PEFTLAB_BACKEND", "local"),
        address=os.environ.get("PEFTLAB_RAY_ADDRESS"),
        worker_threads=int(os.environ.get("PEFTLAB_RAY_WORKER_THREADS", "1")),
        worker_gpus=float(os.environ.get("PEFTLAB_RAY_WORKER_GPUS", "0")),
    ).build()
