"""Where several training runs go: one after another in this process (the local backend: `compare.run_plan`'s loop,
`run_here`), or spread over the workers of a Ray cluster (`RayBackend`), for when one machine is not enough.

With Ray, each worker is an actor that loads the model once and runs the jobs sent to it one at a time: a grid's
planned runs (`train_and_save`, with the same `compare.train_and_score` the local backend uses), or PET's pattern
models (`pet.pattern_model`). What every job shares (the task, the cloze setup, the test texts) goes to Ray's object
store once; each job's events and results stream back as they come (a Ray generator). An actor per worker, not a
task per job (`dispatch="task"`): equally fast on a CPU, as Ray reuses a task's process and the model stays cached
in it, but an actor keeps the model loaded (on a GPU, in its memory) by design rather than by Ray's process-reuse
policy (docs/scaling.md has the measurement). The caller keeps every worker busy,
gets items in whatever order jobs finish, learns of a job that fails (`Failed`) while the others go on, and on
Stop sends no further job and lets the running ones end after their current step. Ray itself is optional
(requirements-ray.txt) and imported only here.
"""

from __future__ import annotations

import dataclasses
import math
import os
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from peftlab.config import Config, counted, setting
from peftlab.errors import PeftlabError, out_of_memory

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
class Failed:
    """The last item of a job that did not finish: its exception, or its worker lost twice. `fault`: it was no
    input's fault (a fault of the app, whose traceback is in the worker's log, or a worker lost); `memory`: where it
    ran out of memory (`errors.out_of_memory`), if it did."""

    reason: str
    fault: bool = True
    memory: str | None = None


@dataclass
class RayBackend:
    """Runs on a Ray cluster: `address` of a running one ("auto", "ray://host:10001"), or None for a Ray started on
    this machine. Each worker takes `threads` CPUs (its torch threads) and, with `gpus`, that share of a GPU;
    `workers` defaults to as many as the cluster's CPUs hold (never more than the jobs). `save_dir`, a path every
    node can write, receives each trained method of a grid as <label>-K<k>-seed<s>.zip; rows carry no weights
    otherwise. A job whose worker dies is tried once more on a new worker (`max_retries`).
    `dispatch` "actor" (the default) keeps one actor per worker with the model loaded once; "task" starts a Ray task
    per job that loads the model itself (the alternative benchmarks/ray_grid.py measures against it)."""

    address: str | None = None
    threads: int = 1
    gpus: float = 0.0
    workers: int | None = None
    save_dir: str | None = None
    max_retries: int = 1
    dispatch: str = "actor"
    role: str = "worker"  # what each one is called where it cannot be placed: a Tune search's are "trial"s

    def connect(self):
        """Ray, connected to the cluster (started here when there is no address), which can hold the workers asked
        for (`worker_capacity`).

        Raises:
            PeftlabError: Ray is not installed, cannot start here or reach the cluster at `address`, or the cluster
                holds no worker of `threads` CPUs (and `gpus` GPUs) or fewer than `workers` of them.
        """
        ray = _ray()
        if not ray.is_initialized():
            try:
                ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
            except Exception as exc:  # a start-up timeout is a bare Exception: it was reported as a bug in peftlab
                reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                where = f"reach the Ray cluster at {self.address!r}" if self.address else "start Ray on this machine"
                raise PeftlabError(
                    f"Could not {where} ({reason}); try again, or train here (the local backend)."
                ) from None
        self._check_capacity(ray)
        return ray

    def worker_capacity(self, ray) -> int:
        """How many workers of `threads` CPUs and `gpus` GPUs the cluster's live nodes hold at once."""

        def holds(node: dict) -> int:
            by_cpu = int(node.get("CPU", 0) // self.threads)
            return min(by_cpu, int(node.get("GPU", 0) // self.gpus)) if self.gpus else by_cpu

        return sum(holds(node["Resources"]) for node in ray.nodes() if node.get("Alive"))

    def _check_capacity(self, ray) -> None:
        # a worker the cluster cannot place waits for ever, without a word: 64 threads per worker on 2 CPUs hung
        # until Ctrl-C, as did more workers than fit (each holds its CPUs for its life)
        capacity = self.worker_capacity(ray)
        asks = counted(self.threads, "CPU") + (f" and {self.gpus:g} GPU" if self.gpus else "")
        resources = ray.cluster_resources()
        holds = f"{resources.get('CPU', 0):g} CPUs" + (f" and {resources.get('GPU', 0):g} GPUs" if self.gpus else "")
        if capacity == 0:
            each = "Each Ray worker" if self.role == "worker" else f"Each {self.role}"
            raise PeftlabError(
                f"{each} asks for {asks}, but no node of the cluster ({holds} in all) has that many; ask for fewer "
                f"{self.role} threads or GPUs."
            )
        if self.workers is not None and self.workers > capacity:
            raise PeftlabError(
                f"{counted(self.workers, 'Ray worker')} of {asks} each do not fit on the cluster ({holds}), which "
                f"holds {capacity}; ask for at most {capacity}."
            )

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

    def worker_count(self, ray, jobs: int) -> int:
        return max(1, min(self.workers or self.worker_capacity(ray), jobs))

    def map(self, lm, job, shared: tuple, inputs: Sequence[tuple], stop=None) -> Iterator[tuple[int, object]]:
        """`job(lm, *shared, *inputs[i], stop)` for every i on the workers (`lm` is the worker's own copy of the
        model, loaded by name with the same dtype), sent in the order of `inputs`, at most one per worker at a time;
        yields (i, item) for each item a job yields, as they come. A job that raises, or whose worker is lost twice,
        ends with (i, Failed(why)); the other jobs go on. `shared` goes to the object store once.
        `stop` (a threading.Event): no further job starts, and the running ones see it at their next `is_set()`."""
        ray = self.connect()
        flag = ray.remote(_StopFlag).options(num_cpus=0).remote()
        count = self.worker_count(ray, len(inputs))
        shared_refs = [ray.put(value) for value in shared]
        if self.dispatch == "actor":
            worker_class = ray.remote(RunWorker).options(
                num_cpus=self.threads,
                num_gpus=self.gpus,
                max_restarts=self.max_retries,
                max_task_retries=self.max_retries,
            )

            def new_slot():  # load_lm takes the torch dtype itself
                return worker_class.remote(lm.name, lm.model.dtype, self.threads)

            slots = [new_slot() for _ in range(count)]

            def start(slot, index):
                return slot.run.remote(job, flag, *shared_refs, *inputs[index])
        else:
            one_job = ray.remote(job_in_task).options(
                num_cpus=self.threads, num_gpus=self.gpus, max_retries=self.max_retries
            )
            slots = list(range(count))
            new_slot = None  # a task is a worker of its own

            def start(slot, index):
                return one_job.remote(lm.name, lm.model.dtype, self.threads, job, flag, *shared_refs, *inputs[index])

        pending, running, stopped = list(range(len(inputs))), {}, False  # running: stream -> (slot, index)

        def send(slot) -> None:
            if pending:
                index = pending.pop(0)
                running[start(slot, index)] = (slot, index)

        try:
            for slot in slots:
                send(slot)
            while running:
                if stop is not None and stop.is_set() and not stopped:
                    pending.clear()  # Stop: no further job; the running ones end after their step
                    flag.set.remote()
                    stopped = True
                ready, _ = ray.wait(list(running), num_returns=1, timeout=WAIT_S)
                for stream in ready:
                    slot, index = running[stream]
                    try:
                        item = ray.get(next(stream))
                    except StopIteration:
                        del running[stream]
                        send(slot)
                        continue
                    except ray.exceptions.RayError as exc:  # the worker died twice, or Ray lost it
                        del running[stream]
                        yield index, Failed(f"worker lost: {exc}")
                        if new_slot is not None and pending:
                            # dead past its restarts, it failed every job sent to it at once: a whole grid's waiting
                            # runs ended "worker lost" unrun while the other workers were well
                            ray.kill(slot)
                            slots[slots.index(slot)] = slot = new_slot()
                        send(slot)
                        continue
                    yield index, item
        finally:
            flag.set.remote()
            if self.dispatch == "actor":
                for worker in slots:
                    ray.kill(worker)


def run_on(backend, lm, task, setup, plan: Sequence, settings, test: Sequence[dict], stop=None) -> Iterator:
    """Train `plan` (compare.PlannedRun) with `backend` (a RayBackend or a zerogpu.GPUCalls): TrainEvents and one
    GridRow per run, as they come; a run that fails gets a row saying why. The rows carry no weights: each trained
    method is written to the backend's `save_dir` when it has one.

    The longest runs (by method, `standard.STEP_COST`) go first: the last to finish are then short, so no worker
    waits long at the end, and the first GPU call sizes the ones after it from above."""
    from peftlab.standard import STEP_COST

    order = sorted(plan, key=lambda run: -STEP_COST.get(run.config.name, 1.0))
    shared = (task, setup, settings, list(test), backend.save_dir)
    for index, item in backend.map(lm, train_and_save, shared, [(run,) for run in order], stop):
        yield failed_row(order[index], item.reason) if isinstance(item, Failed) else item


def run_here(lm, job, shared: tuple, inputs: Sequence[tuple], stop=None) -> Iterator[tuple[int, object]]:
    """`RayBackend.map` in this process, one job after another: (i, item) for each item of `job(lm, *shared,
    *inputs[i], stop)`; a job raises as it would anywhere; after `stop`, no further job starts."""
    for index, arguments in enumerate(inputs):
        if stop is not None and stop.is_set():
            return
        for item in job(lm, *shared, *arguments, stop):
            yield index, item


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


def _worker_lm(model: str, dtype, threads: int):
    """The model as a worker loads it, with torch limited to the worker's CPUs."""
    import torch

    from peftlab.models import load_lm

    torch.set_num_threads(threads)  # OMP_NUM_THREADS, set here once torch had started, changed nothing
    return load_lm(model, dtype=dtype)


def _guarded(job, lm, flag, arguments) -> Iterator:
    """The job's items on a worker; an exception becomes its last item, Failed, so the caller's other jobs go on."""
    import ray

    try:
        yield from job(lm, *arguments, _RemoteStop(ray, flag))
    except PeftlabError as exc:
        yield Failed(str(exc), fault=False)
    except Exception as exc:
        traceback.print_exc()  # Ray shows a worker's stderr in the driver's log: the fault's traceback is kept there
        yield Failed(f"{type(exc).__name__}: {exc}", memory=out_of_memory(exc))


class RunWorker:
    """One Ray worker (an actor): the model loaded once; runs one job per call."""

    def __init__(self, model: str, dtype, threads: int):
        self.lm = _worker_lm(model, dtype, threads)

    def run(self, job, flag, *arguments) -> Iterator:
        yield from _guarded(job, self.lm, flag, arguments)


def job_in_task(model: str, dtype, threads: int, job, flag, *arguments) -> Iterator:
    """One job as a Ray task of its own (`dispatch="task"`): it loads the model, then runs the job."""
    yield from _guarded(job, _worker_lm(model, dtype, threads), flag, arguments)


def train_and_save(lm, task, setup, settings, test, save_dir: str | None, run, stop) -> Iterator:
    """A grid's job: the run's TrainEvents, then its GridRow without weights (written to `save_dir` when given)."""
    from peftlab.compare import GridRow, train_and_score
    from peftlab.saving import zip_trained

    for item in train_and_score(lm, task, setup, run, settings, test, stop):
        if isinstance(item, GridRow):
            saved = None
            if save_dir and item.trained is not None:
                Path(save_dir).mkdir(parents=True, exist_ok=True)
                saved = str(zip_trained(item.trained, Path(save_dir) / adapter_name(item.values)))
            item = dataclasses.replace(item, trained=None, saved=saved)  # the weights stay here or in saved
        yield item


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
    """Where several runs train (a grid, a sweep, the standard comparison, PET): here one after another, or on Ray
    (`RayBackend`)."""

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
        """None for the local backend (`compare.run_plan`'s own loop), else a RayBackend writing to `save_dir`,
        connected to its cluster (`RayBackend.connect`).

        Raises:
            PeftlabError: Ray cannot start or be reached, or the cluster cannot hold the workers asked for.
        """
        if self.backend == "local":
            return None
        backend = RayBackend(self.address, self.worker_threads, self.worker_gpus, self.workers, save_dir)
        backend.connect()  # before any work: a bad address was told after the zero-shot row had been scored
        return backend


def backend_from_env() -> RayBackend | None:
    """The app's backend, chosen by whoever runs it: PEFTLAB_BACKEND=ray trains the Soft prompts tab's grids and
    sweeps, the standard comparison's trained methods and PET's pattern models on Ray (PEFTLAB_RAY_ADDRESS, default
    a Ray started here; PEFTLAB_RAY_WORKER_THREADS and PEFTLAB_RAY_WORKER_GPUS per worker); unset or "local" trains
    them in the app's process.

    Raises:
        PeftlabError: an unknown backend, a setting that is not a number, or one out of range.
    """

    def number(name: str, default: str, kind: type):
        value = os.environ.get(name, default)
        try:
            return kind(value)
        except ValueError:  # "two" was a raw ValueError as the app started
            told = "a whole number" if kind is int else "a number"
            raise PeftlabError(f"{name} must be {told}, not {value!r}.") from None

    return BackendConfig(
        backend=os.environ.get("PEFTLAB_BACKEND", "local"),
        address=os.environ.get("PEFTLAB_RAY_ADDRESS"),
        worker_threads=number("PEFTLAB_RAY_WORKER_THREADS", "1", int),
        worker_gpus=number("PEFTLAB_RAY_WORKER_GPUS", "0", float),
    ).build()
