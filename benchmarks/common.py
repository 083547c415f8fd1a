"""What every benchmark shares: progress lines on stderr, a matrix multiply's peak, timing phases that say how busy
the rest of the machine was (a shared 2-core box: a number is trustworthy only when others' share is near 0), and runs
whose finished part is reported whatever happens after it."""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator

import torch


def logger(name: str):
    """A function printing `[name] message` lines on stderr (stdout is kept for the JSON result)."""

    def log(message: str) -> None:
        print(f"[{name}] {message}", file=sys.stderr, flush=True)

    return log


def busy_cpu_seconds(pids=()) -> tuple[float, float]:
    """(CPU seconds all processes have used since boot, CPU seconds this process and `pids` have used)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        busy = (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait
    except (OSError, ValueError, IndexError):
        busy = float("nan")
    own = os.times()
    return busy, own.user + own.system + sum(_process_cpu_seconds(pid) for pid in pids)


def _process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of another process (for a benchmark that runs the app in a child process)."""
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    except (OSError, ValueError, IndexError):
        return 0.0


class Phase:
    """Wall time of a block and the share of the machine's CPU other processes took meanwhile.

    When another process runs, OpenMP threads wait on each other and a forward pass can take 5x longer,
    so every phase reports `others_cpu_share`: other processes' CPU time / (wall time x cores).
    Give a `log` function to have the phase report itself when it ends.
    """

    def __init__(self, name: str = "", log=None, pids=()):
        self.name, self.log, self.pids = name, log, tuple(pids)  # pids: child processes whose CPU is ours too

    def __enter__(self) -> Phase:
        self.busy0, self.own0 = busy_cpu_seconds(self.pids)
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start
        busy1, own1 = busy_cpu_seconds(self.pids)
        others = max(0.0, (busy1 - self.busy0) - (own1 - self.own0))
        self.others_cpu_share = others / (max(self.seconds, 1e-9) * (os.cpu_count() or 1))
        if self.log:
            note = "  (other processes were busy: timing is unreliable)" if self.others_cpu_share > 0.1 else ""
            self.log(f"  {self.name}: {self.seconds:.2f} s, others' CPU share {self.others_cpu_share:.2f}{note}")


def forget_memos(lm) -> None:
    """Drop what `lm` memoised (`LM.memo`: zero-shot scores, frozen features), so that a grid timed after another
    pays for them too: the second of two grids read the first's (zero-shot 0.04 s against 18.9 s), which leant a
    comparison of the two towards it."""
    lm.derived.clear()


STOPPED = "stopped by Ctrl-C"


def _failure(exc: BaseException) -> str:
    traceback.print_exception(exc)  # to stderr, where the progress lines go
    return STOPPED if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}"


def until_failure(items: Iterable, failure: dict) -> Iterator:
    """The items of `items` until one raises or Ctrl-C is pressed: then its traceback goes to stderr, `failure` gets
    {"error": "<type>: <message>"} (or STOPPED), and the loop over them ends as if they had, so that what came before
    is still reported. A benchmark's seeds or methods run for up to an hour each: a fault in the last printed none of
    the others' figures."""
    try:
        yield from items
    except (Exception, KeyboardInterrupt) as exc:
        failure["error"] = _failure(exc)


def kept_runs(names: Iterable[str], run: Callable[[str], dict]) -> list[dict]:
    """`run(name)` for each name, in order: a run that raises is {"run": name, "error": ...} and the next one runs; a
    run stopped by Ctrl-C (raised, or its own record's "error") is the last."""
    records = []
    for name in names:
        try:
            records.append(run(name))
        except (Exception, KeyboardInterrupt) as exc:
            records.append({"run": name, "error": _failure(exc)})
        if records[-1].get("error") == STOPPED:
            break
    return records


def exit_code(records: Iterable[dict]) -> int:
    """1 when any record has an error (its JSON is printed all the same), else 0."""
    return int(any("error" in record for record in records))


def matmul_gflops(dtype: torch.dtype, n: int = 2048, warmup: int = 3, reps: int = 10) -> float:
    """Plain n x n matmul throughput: 2 * n^3 FLOPs per product, best of the timed repetitions."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    for _ in range(warmup):
        torch.mm(a, b)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return 2 * n**3 / min(times) / 1e9
