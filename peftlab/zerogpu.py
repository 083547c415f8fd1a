"""ZeroGPU, the free GPU of Hugging Face Spaces: what it allows, and a tab's model work as GPU calls.

On a ZeroGPU Space (`SPACES_ZERO_GPU=true`) a GPU is attached only inside a function decorated with
`spaces.GPU(duration=...)`, for at most that many seconds: a call that runs past its duration is aborted, a
duration above about MAX_DURATION_S is refused, and a visitor's daily quota (minutes) must hold the duration asked
for, so a job asks for no more than it needs. The call runs in a process forked from the app's, its arguments and
items pickled across (models by name, `LM.__reduce__`; trained methods as their weights; an RLHF session as its
stages' adapters, `rlhf.crossing`).

- `on_gpu` / `call_on_gpu`: one job in one call, sized by the pace of the earlier calls of its kind (a cloze
  evaluation, a search, an RLHF stage); `steps_per_call` splits a long job into chunks of steps (PPO).
- `GPUCalls`: a backend like `backends.RayBackend` for several training runs, one call per run, each sized from the
  calls before it (a grid's or a sweep's runs, the standard comparison's trained methods, PET's pattern models).

Off ZeroGPU `spaces.GPU` returns the function unchanged and every job runs right here, so the same code runs on a
CPU or a dedicated GPU; `GPUCalls(cap_s=...)` simulates a short cap there.

The versions ZeroGPU documents (checked 2026-11-30) are PYTHON_VERSIONS and TORCH_VERSIONS; the Space's front
matter and requirements.txt use one of each (tests/test_space.py checks).
"""

from __future__ import annotations

import functools
import math
import os
import pickle
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from peftlab.errors import PeftlabError, out_of_memory, out_of_memory_sentence
from peftlab.training import Pace

PYTHON_VERSIONS = ("3.10.13", "3.12.12")
TORCH_VERSIONS = ("2.8.0", "2.9.1", "2.10.0", "2.11.0")
DEFAULT_DURATION_S = 60  # what spaces.GPU asks for when given no duration
MAX_DURATION_S = 300  # longer calls are refused
MIN_DURATION_S = 20  # never ask for less: the first steps of a run warm CUDA up
MARGIN = 2.0  # a call asks for this many times the seconds the calls before it give its size


def on_zero_gpu() -> bool:
    """Whether this process runs on a ZeroGPU Space (the variable the `spaces` package reads)."""
    return os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true")


_APP_PID = os.getpid()  # a GPU call's worker is forked from the app's process: another pid, this module's state


def in_app_process_on_zero_gpu() -> bool:
    """Whether this is the app's own process on a ZeroGPU Space, where no model may go to "cuda" (`default_device`);
    False in a GPU call's worker, where the GPU is real, and off ZeroGPU."""
    return on_zero_gpu() and os.getpid() == _APP_PID


def _duration(seconds: float, *_) -> float:
    """The duration a call asks for: its first argument (spaces.GPU calls this with the call's arguments)."""
    return seconds


@dataclass
class _CallEnded:
    """The last item of every GPU call: the seconds its job took inside the call (not counting the wait for a GPU
    or a worker's start), and what ended it if it failed: `spaces` would tell any error as its class's name alone
    ("OutOfMemoryError", title "ZeroGPU worker error"). `error` is the PeftlabError's sentence, memory run out's
    (`errors.out_of_memory_sentence`), or for a fault of the app (`fault`) its class and message."""

    seconds: float
    error: str | None = None
    fault: bool = False


def _in_gpu_call(seconds: float, crossing: bytes) -> Iterator:
    """The items of `job(*arguments)`, pickled as `crossing`, inside one GPU call, then its _CallEnded. On ZeroGPU
    the call runs in a worker process forked from the app's (and kept for later calls), its items pickled back: a
    model crosses by reference (`LM.__reduce__`: the worker loads it on its GPU, once), a trained method as its
    trainable weights (`TrainedMethod.__reduce__`), and a stop flag as it stood when the call started
    (`StopAtStart`): a Stop pressed during a call takes effect after it.

    The job and its arguments cross as bytes, read here: `spaces` reads a call's arguments in the worker before it
    makes the GPU real, and a model loaded there reached its emulated CUDA and killed the worker (a review's
    finding). Read inside the call, a model loads on the real GPU, and its loading counts in the call's seconds."""
    started = time.perf_counter()
    try:
        job, arguments = pickle.loads(crossing)
        yield from job(*arguments)
    except PeftlabError as exc:
        yield _CallEnded(time.perf_counter() - started, str(exc))
        return
    except Exception as exc:  # noqa: BLE001 (told in the app as off ZeroGPU, `ui.presses.shown_error`)
        if where := out_of_memory(exc):
            yield _CallEnded(time.perf_counter() - started, out_of_memory_sentence(where))
            return
        traceback.print_exception(exc)  # the worker's log is the Space's log
        yield _CallEnded(time.perf_counter() - started, f"{type(exc).__name__}: {exc}", fault=True)
        return
    yield _CallEnded(time.perf_counter() - started)


try:
    import spaces
except ImportError:  # a machine without `spaces` (it is in requirements.txt): nothing to decorate
    gpu_call = _in_gpu_call
else:
    gpu_call = spaces.GPU(duration=_duration)(_in_gpu_call)


@dataclass(frozen=True)
class StopAtStart:
    """A job's stop flag as it stood when its GPU call started, in its place inside the call: a threading.Event
    cannot be pickled into the call's process. A Stop pressed before the call (while the handler loaded a model,
    or between two chunks of a job) ends the job at its first check, as it does off ZeroGPU, instead of letting the
    call run its whole job; one pressed during the call does not reach it."""

    pressed: bool

    def is_set(self) -> bool:
        return self.pressed


def _returning(function, *arguments) -> Iterator:
    """A function as a job: its one item is the function's value."""
    yield function(*arguments)


def _through_gpu(asked: float, job, arguments: tuple) -> Iterator:
    """The items of one GPU call of `asked` seconds; returns the seconds its job took inside the call.

    Raises:
        PeftlabError: the job's own, or memory run out, raised again here with its sentence.
        RuntimeError: a fault of the app inside the call, with its class and message (`_CallEnded`).
        _CallCut: ZeroGPU ended the call before its job did.
    """
    ended, started = _CallEnded(float("nan")), clock()
    try:
        for item in gpu_call(asked, pickle.dumps((job, arguments))):
            if isinstance(item, _CallEnded):
                ended = item
            else:
                yield item
    except Exception as exc:
        if getattr(exc, "message", None) == ABORTED:
            raise _CallCut(asked, clock() - started) from None
        raise
    if ended.fault:
        raise RuntimeError(f"in a GPU call, {ended.error}")
    if ended.error is not None:
        raise PeftlabError(ended.error)
    return ended.seconds


def _check_call(asked: float, took: float, cap_s: float, what: str, shorter: str) -> None:
    if took > asked:
        raise PeftlabError(
            f"{what} took {took:.0f} s of GPU time, past the {asked:.0f} s its call asked for "
            f"(at most {cap_s:.0f} s on this Space); {shorter}."
        )


PACE_MEMORY = 20  # the latest calls of a kind its pace is fitted to


@dataclass
class CallTimes:
    """The seconds a kind of call takes for its size, fitted to the calls seen in this process as a `training.Pace`
    (set-up + seconds per unit × units; non-negative least squares, scipy's `nnls`): every visitor's calls of a kind
    share it, since they run on the same GPU. A call's seconds include fixed costs (a model's move to the GPU, PPO's
    first steps): taken as seconds per unit alone, a 2-text evaluation's 1 s made every later 400-text one "203 s"
    and refused it for every visitor, and that pace only rose. With calls of one size alone, the pace is
    proportional to theirs."""

    seen: list[tuple[float, float]] = field(default_factory=list)  # (units, seconds) of the latest calls

    def add(self, units: float, seconds: float) -> None:
        if math.isfinite(units) and math.isfinite(seconds):  # one NaN made every later fit of the kind fail
            self.seen = [*self.seen, (units, seconds)][-PACE_MEMORY:]

    def fit(self) -> Pace:
        """The set-up seconds and the seconds per unit of the calls seen."""
        from scipy.optimize import nnls

        if len({units for units, _ in self.seen}) < 2:
            return Pace(0.0, max(seconds / units for units, seconds in self.seen))
        design = [[1.0, units] for units, _ in self.seen]
        (setup, per_unit), _ = nnls(design, [seconds for _, seconds in self.seen])
        return Pace(float(setup), float(per_unit))

    def seconds(self, units: float) -> float:
        """The seconds a call of `units` takes; past the largest call seen, at least that call's seconds per unit
        (a larger call that took no longer fitted 0 s a unit, and PPO put every remaining step in one call)."""
        largest = max(size for size, _ in self.seen)
        fitted = self.fit().seconds(units)
        if units <= largest:
            return fitted
        return max(fitted, max(s for size, s in self.seen if size == largest) * units / largest)

    def sure(self, units: float) -> bool:
        """Whether `seconds(units)` is measured rather than stretched from smaller calls alone (which counts their
        fixed costs once per unit): it rests on calls of two sizes, or on one at least `units` large."""
        sizes = {size for size, _ in self.seen}
        return len(sizes) >= 2 or max(sizes) >= units


_PACES: dict[str, CallTimes] = {}  # by kind of call, in this process


def on_gpu(
    job,
    *arguments,
    kind: str,
    units: float = 1.0,
    stop=None,
    what: str = "The job",
    shorter: str = "make it smaller",
    measured_s: float | None = None,
) -> Iterator:
    """The items of `job(*arguments, stop)` (without `stop` when it is None): in one GPU call on a ZeroGPU Space,
    where the job gets the flag as it stood when the call started (`StopAtStart`), else right here.

    `units` is the job's size (texts to score, search iterations; 1 for one text): the call asks for MARGIN times
    the seconds the `CallTimes` of the earlier calls of its `kind` in this process give that size (DEFAULT_DURATION_S
    for the first), between MIN_DURATION_S and MAX_DURATION_S. A job that no call can hold, by a measured pace
    (`CallTimes.sure`), is refused before it starts. A call that ends early (ZeroGPU aborted it, or the caller closed
    it) counts as taking all it asked, so the next call of its size asks for twice as long; one that ZeroGPU refused
    before it ran (the visitor's quota, no GPU in time) counts for nothing. `measured_s`, the seconds the caller
    measured this job to take (a stage priced by its first steps on the press before, `ui.estimates.Paced`), is
    asked for at least: a 500-s stage closed after its first steps to show its estimate counted as taking 60 s,
    and its next two presses were aborted at 120 and 240 s, more than a free visitor's daily quota.

    Raises:
        PeftlabError: the job would take longer than one call may last (before it starts), or it took longer than
            its call asked for (ZeroGPU aborts such a call), `what` and `shorter` wording the sentence; or the job's
            own (or memory run out), raised inside the call and raised again here with its sentence.
        RuntimeError: a fault of the app inside the call (`_through_gpu`).
        gradio.Error: ZeroGPU's refusal of the call, as `spaces` words it.
    """
    if not on_zero_gpu():
        yield from job(*arguments, *([] if stop is None else [stop]))
        return
    pace = _PACES.get(kind)
    expected = None if pace is None else pace.seconds(units)
    sure = pace is not None and pace.sure(units)
    if measured_s is not None and (expected is None or measured_s > expected):
        expected, sure = measured_s, True
    if expected is not None and expected > MAX_DURATION_S / MARGIN and sure:
        raise PeftlabError(
            f"{what} would take about {expected:.0f} s of GPU time, more than one GPU call may safely ask "
            f"for on this Space ({MAX_DURATION_S / MARGIN:.0f} s of its {MAX_DURATION_S} s); {shorter}."
        )
    asked = DEFAULT_DURATION_S if expected is None else MARGIN * expected
    asked = min(MAX_DURATION_S, max(MIN_DURATION_S, asked))
    pressed = stop is not None and stop.is_set()
    crossing = arguments if stop is None else (*arguments, StopAtStart(pressed))
    ended = "early"  # closed by its caller (an estimate's first steps), or aborted by ZeroGPU at its duration
    try:
        took = yield from _through_gpu(asked, job, crossing)
        ended = "done"
    except PeftlabError:
        ended = "refused"  # the job's own sentence: it says nothing of its pace
        raise
    except _CallCut as cut:
        if not cut.timed_out:  # its worker died: that says nothing of the pace
            ended = "failed"
        raise PeftlabError(cut.sentence(what, shorter)) from None
    except Exception:
        # a call refused before it ran (the visitor's quota used up, no GPU in time) or a fault: no pace either. A
        # quota refusal counted as all it asked doubled the next call of its kind for every visitor, until their
        # presses were refused as too long (a review's finding)
        ended = "failed"
        raise
    finally:
        units = max(units, 1e-9)
        # nor does a job stopped at its start: its few microseconds for the whole size made the next run of its kind
        # one call of the shortest duration, which ZeroGPU aborts
        if ended in ("done", "early") and not pressed:  # one that ended early: all it asked
            _PACES.setdefault(kind, CallTimes()).add(units, took if ended == "done" else asked)
    _check_call(asked, took, MAX_DURATION_S, what, shorter)


clock = time.perf_counter  # a call's seconds as the app sees them, waits included (`_CallCut`)
ABORTED = "GPU task aborted"  # what `spaces` says when a call's worker ends before its job (a gr.Error's message)


class _CallCut(Exception):
    """ZeroGPU's "GPU task aborted": `spaces` says it of a call that ran past the duration it asked for and of one
    whose worker died before (killed for memory, crashed), which must not double the next call of its kind. The
    call's seconds in the app tell them apart: a timeout comes no sooner than the duration asked."""

    def __init__(self, asked: float, elapsed: float):
        super().__init__(ABORTED)
        self.asked, self.elapsed = asked, elapsed
        self.timed_out = elapsed >= 0.9 * asked

    def sentence(self, what: str, shorter: str, again: bool = True) -> str:
        """What happened, and what to do; `again`: the next call of its kind asks for more time."""
        if not self.timed_out:
            return (
                f"{what} stopped after {self.elapsed:.0f} s of the {self.asked:.0f} s of GPU time its call asked for: "
                "its GPU worker ended (ZeroGPU says only 'GPU task aborted'; the Space's log may say why); press "
                f"again, or {shorter}."
            )
        retry = f"press again to ask for more, up to {MAX_DURATION_S} s, or " if again else ""
        ended = f"{what} needed more than the {self.asked:.0f} s of GPU time its call asked for, and ZeroGPU ended it"
        return f"{ended}; {retry if self.asked < MAX_DURATION_S else ''}{shorter}."


def steps_per_call(kind: str, remaining: int) -> int:
    """How many of a job's `remaining` steps one call of `kind` takes (the job goes on in the next call): all of
    them off ZeroGPU; on ZeroGPU one while the pace of its kind is unknown, then as many as its `CallTimes` fit into the
    longest duration a call may safely ask for (`on_gpu`)."""
    pace = _PACES.get(kind)
    if not on_zero_gpu():
        return remaining
    if pace is None:
        return min(1, remaining)
    # the most steps whose seconds fit (seconds grow with steps): a bisection
    low, high = 1, remaining
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if pace.seconds(middle) <= MAX_DURATION_S / MARGIN else (low, middle - 1)
    return low


def call_on_gpu(
    function,
    *arguments,
    kind: str,
    units: float = 1.0,
    what: str = "The job",
    shorter: str = "make it smaller",
    **keywords,
) -> object:
    """`function(*arguments, **keywords)`'s value, computed in one GPU call on a ZeroGPU Space, else right here
    (`on_gpu`, whose errors it raises)."""
    function = functools.partial(function, **keywords) if keywords else function
    return list(on_gpu(_returning, function, *arguments, kind=kind, units=units, what=what, shorter=shorter))[-1]


RUN_WORDS = ("A training run", "make the runs shorter (fewer steps)")  # a run's `what` and `shorter` (`on_gpu`)


@dataclass
class GPUCalls:
    """Runs each job as one GPU call (`gpu_call`), one after another (a grid's runs the longest first); a Stop
    takes effect between calls.

    The first call asks for `first_s` seconds, or with a `kind`, for MARGIN times the longest of the latest runs of
    that kind on the same model in this process (every visitor's, an aborted one as all it asked: a grid whose first
    run needed 70 s asked 60 on every press and was aborted every time); each later one for MARGIN times the longest
    call so far (at least MIN_DURATION_S), never more than `cap_s`. A call that took longer than it asked for raises,
    as ZeroGPU would have aborted it: with a short `cap_s` on a CPU this checks that every call of a job fits. `calls`
    keeps (asked, took) seconds of every call. `save_dir` receives a grid's trained methods as `RayBackend`'s does.
    """

    cap_s: float = MAX_DURATION_S
    first_s: float = DEFAULT_DURATION_S
    save_dir: str | None = None
    calls: list[tuple[float, float]] = field(default_factory=list)
    kind: str | None = None

    def describe(self) -> str:
        return f"Each training run is a GPU call of its own (ZeroGPU), of at most {self.cap_s:.0f} s."

    def duration(self, model: str = "") -> float:
        """What the next call asks for; the first by the latest runs of this `kind` on `model` (its name)."""
        if not self.calls:
            runs = _PACES.get(self._runs_kind(model)) if self.kind else None
            first = self.first_s if runs is None else MARGIN * max(took for _, took in runs.seen)
            return min(self.cap_s, max(MIN_DURATION_S, first))
        return min(self.cap_s, max(MIN_DURATION_S, MARGIN * max(took for _, took in self.calls)))

    def _runs_kind(self, model: str) -> str:
        # per model: another visitor's 140-s run on a large model made a small one's first ask 280 s
        return f"{self.kind}:{model}"

    def _ran(self, model: str, took: float) -> None:
        if self.kind:
            _PACES.setdefault(self._runs_kind(model), CallTimes()).add(1, took)

    def map(self, lm, job, shared: tuple, inputs: Sequence[tuple], stop=None) -> Iterator[tuple[int, object]]:
        """(i, item) for each item of `job(lm, *shared, *inputs[i], stop)`, each job in a GPU call of its own.

        Raises:
            PeftlabError: a call took longer than it asked for (ZeroGPU aborts such a call).
        """
        for index, arguments in enumerate(inputs):
            if stop is not None and stop.is_set():
                return
            asked = self.duration(lm.name)
            calls = _through_gpu(asked, job, (lm, *shared, *arguments, None))
            while True:
                try:
                    item = next(calls)
                except StopIteration as end:
                    took = end.value
                    break
                except _CallCut as cut:
                    if cut.timed_out:
                        self._ran(lm.name, asked)
                    raise PeftlabError(cut.sentence(*RUN_WORDS, again=bool(self.kind))) from None
                yield index, item
            self.calls.append((asked, took))
            self._ran(lm.name, took)
            _check_call(asked, took, self.cap_s, *RUN_WORDS)
