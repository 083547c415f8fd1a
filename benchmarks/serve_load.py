"""The app under many visitors: latency of cheap clicks while a grid trains, results against runs alone,
cold start, and memory and temporary files after many sessions open and close.

Run from the repository root:

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/serve_load.py [--visitors 8] [--sessions 50]

The app runs in its own process (as on a Space), on the embedded model, with its temporary folder
(GRADIO_TEMP_DIR) in a fresh directory; visitors are `gradio_client.Client`s in this process.

1. Cold start: seconds from starting the app process until it serves its page, and until it has answered
   its first "classify one text" (model loading from the converted cache included; target <= 10 s).
2. Alone: every request the visitors will make (one text each to classify, an evaluation of 64 test
   texts with two calibration settings) is answered once with nothing else running: the reference.
3. Load: one more visitor trains a 6-method grid (1 seed, K=8, 20 steps, 64 test texts) through the Soft
   prompts tab while each of the `--visitors` visitors loops "classify one text" in one thread and
   "evaluate 64 texts" in another until the grid ends. Every answer is compared with its reference
   (exactly: label probabilities, top tokens, every prediction of the evaluation); the grid is then run
   alone too and its rows compared. Latency is client-side wall time per call, p50 and p95; classify
   calls are counted "while training" when the grid was running from submit to answer. Evaluations
   share the heavy queue with the grid (one heavy job at a time on a CPU), so their latency is mostly
   waiting; a classify must never wait (target p95 <= 2 s while training, 0 errors, 0 mismatches).
4. Sessions: `--sessions` visitors one after another each classify, evaluate 16 texts and train a 1-step
   LoRA run (a copy of the model the session keeps), then close. The app process's resident memory and
   the files under its temporary folder are read before and after (target: back within 5 %).

stdout gets one JSON object (indent 2) as its last line; progress lines go to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from gradio_client import Client  # noqa: E402

from benchmarks.common import Phase, logger  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODEL, TASK = "smollm2-135m", "rt-sentiment"
TEMPLATE = "Review: {text}\nSentiment:{mask}"
VERBALIZER = "negative: negative\npositive: positive"
TEXTS = [
    "A wonderful, moving and brilliantly acted film.",
    "Dull, overlong and badly written.",
    "I laughed all the way through.",
    "The plot makes no sense at all.",
    "A quiet triumph of a debut.",
    "Two hours I will never get back.",
    "Visually stunning but emotionally hollow.",
    "The cast is terrific and the script sparkles.",
]
GRID_METHODS = ["prompt-tuning", "p-tuning", "prefix-tuning", "lora", "head", "full"]
CLASSIFY_P95_TARGET_S = 2.0
COLD_START_TARGET_S = 10.0
SESSION_TOLERANCE = 0.05
log = logger("serve_load")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_app(temp_dir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = dict(os.environ, GRADIO_TEMP_DIR=str(temp_dir), GRADIO_HEARTBEAT_INTERVAL="1", PYTHONUNBUFFERED="1")
    code = (
        "from peftlab.ui import build_app, launch_options; "
        f"build_app().launch(server_name='127.0.0.1', server_port={port}, ssr_mode=False, quiet=True, "
        "**launch_options())"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(temp_dir.parent / "app.log", "w"),
    )
    return process, f"http://127.0.0.1:{port}/"


def wait_until_serving(url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the app exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url + "config", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.05)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def temp_usage(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def classify_args(text: str) -> list:
    return [MODEL, TASK, None, "text", "label", TEMPLATE, VERBALIZER, "none", 0, 13, text]


def evaluate_args(calibration: str, limit: int) -> list:
    return [MODEL, TASK, None, "text", "label", TEMPLATE, VERBALIZER, calibration, 0, 13, limit]


def compare_args(methods, steps: int, shots: str, test_limit: int) -> list:
    """/compare with every method's shipped learning rate (no overrides)."""
    return [
        MODEL,
        TASK,
        None,
        "text",
        "label",
        TEMPLATE,
        VERBALIZER,
        methods,
        shots,
        "13",
        steps,
        "log-likelihood",
        "",
        test_limit,
    ]


def classify_answer(result) -> tuple:
    """What a classify returns that must not change: the probability bars and the top tokens (after the verdict)."""
    _, plot, tokens = result
    bars = json.loads(plot["plot"])["data"][0]
    return json.dumps(bars["x"], sort_keys=True), json.dumps(bars["y"]), json.dumps(tokens["data"])


def evaluate_answer(result) -> str:
    """Every prediction of an evaluation (its CSV): text, gold, predicted and each label's probability."""
    return Path(result[3]).read_text(encoding="utf-8")


def asks_for_a_second_press(result) -> bool:
    """Whether a /compare answer is the grid's estimate, which starts it only on a second press (a grid expected to run
    over the app's CONFIRM_ABOVE_S, as the 6-method grid is on a slow or busy CPU)."""
    return "Press the button again to start" in str(result[0])


def started_grid(client, grid: list):
    """The /compare job of `grid` once it runs (its first output came), pressed twice when the first press answered
    with the estimate, as a visitor would: the load phase timed visitors beside an estimate, and no grid ran."""
    while True:
        job = client.submit(*grid, api_name="/compare")
        while not job.outputs() and not job.done():
            time.sleep(0.05)
        outputs = job.outputs()
        if not (outputs and asks_for_a_second_press(outputs[0])):
            return job
        job.result()  # the estimate's press ends; the next press runs the grid


def grid_answer(result) -> list:
    """The grid's rows without their timings."""
    headers, rows = result[1]["headers"], result[1]["data"]
    keep = [
        i
        for i, name in enumerate(headers)
        if name in ("method", "K", "seed", "test_accuracy", "macro_f1", "trainable_params", "steps", "status")
    ]
    return [[row[i] for i in keep] for row in rows]


def percentiles(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    return {
        "n": len(values),
        "p50_s": round(statistics.median(ordered), 3),
        "p95_s": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 3),
        "max_s": round(ordered[-1], 3),
    }


def timed(client: Client, args: list, api_name: str, timeout: float = 1800):
    started = time.monotonic()
    result = client.submit(*args, api_name=api_name).result(timeout=timeout)
    return result, started, time.monotonic()


def cold_start(temp_dir: Path) -> tuple[subprocess.Popen, str, dict]:
    started = time.monotonic()
    process, url = start_app(temp_dir)
    wait_until_serving(url, process)
    ready = time.monotonic() - started
    client = Client(url, verbose=False)
    client.predict(*classify_args(TEXTS[0]), api_name="/classify")
    first = time.monotonic() - started
    client.close()
    log(f"cold start: serving after {ready:.1f} s, first classify answered after {first:.1f} s")
    return (
        process,
        url,
        {
            "serving_s": round(ready, 2),
            "first_classify_s": round(first, 2),
            "target_s": COLD_START_TARGET_S,
            "met": first <= COLD_START_TARGET_S,
        },
    )


def load_phase(url: str, pid: int, visitors: int, grid_steps: int) -> dict:
    clients = [Client(url, verbose=False) for _ in range(visitors + 1)]
    trainer, visitors_clients = clients[0], clients[1:]
    grid = compare_args(GRID_METHODS, grid_steps, "8", 64)
    evaluations = {"none": evaluate_args("none", 64), "mean": evaluate_args("mean", 64)}
    log("references: every request alone")
    reference_classify = {
        text: classify_answer(visitors_clients[0].predict(*classify_args(text), api_name="/classify")) for text in TEXTS
    }
    reference_evaluate = {
        name: evaluate_answer(visitors_clients[0].predict(*args, api_name="/evaluate"))
        for name, args in evaluations.items()
    }

    records, errors, mismatches = [], [], []
    training = threading.Event()
    done = threading.Event()
    lock = threading.Lock()

    def record(kind, started, ended, during):
        with lock:
            records.append({"kind": kind, "seconds": ended - started, "while_training": during})

    def visitor_loop(kind, client, name, arguments, answer, reference):
        """One visitor's calls of `kind` ("classify" or "evaluate") until the load ends, each timed and checked."""
        while not done.is_set():
            try:
                during = training.is_set()
                result, started, ended = timed(client, arguments, f"/{kind}")
                record(kind, started, ended, during and training.is_set())  # the grid ran through the whole call
                if answer(result) != reference:
                    mismatches.append((kind, name))
            except Exception as exc:  # counted and reported; the load goes on
                errors.append((kind, repr(exc)))

    log(f"load: a 6-method grid ({grid_steps} steps) while {visitors} visitors classify and evaluate")
    threads = []
    for i, client in enumerate(visitors_clients):
        text, name = TEXTS[i % len(TEXTS)], "mean" if i % 2 else "none"
        classify = ("classify", client, text, classify_args(text), classify_answer, reference_classify[text])
        evaluate = ("evaluate", client, name, evaluations[name], evaluate_answer, reference_evaluate[name])
        threads += [threading.Thread(target=visitor_loop, args=arguments) for arguments in (classify, evaluate)]
    with Phase("load", log, [pid]) as phase:
        grid_job = started_grid(trainer, grid)
        training.set()
        grid_started = time.monotonic()
        for thread in threads:
            thread.start()
        try:
            grid_result = grid_job.result(timeout=3600)
        except Exception as exc:
            errors.append(("grid", repr(exc)))
            grid_result = None
        training.clear()
        grid_seconds = time.monotonic() - grid_started
        done.set()
        for thread in threads:
            thread.join()
    log("the grid alone, for its reference")
    with Phase("grid alone", log, [pid]) as alone_phase:
        grid_alone = started_grid(trainer, grid).result(timeout=3600)
    if grid_result is not None and grid_answer(grid_result) != grid_answer(grid_alone):
        mismatches.append(("grid", "rows differ"))
    for client in clients:
        client.close()
    classify_during = [r["seconds"] for r in records if r["kind"] == "classify" and r["while_training"]]
    classify_after = [r["seconds"] for r in records if r["kind"] == "classify" and not r["while_training"]]
    return {
        "visitors": visitors,
        "classify_while_training": percentiles(classify_during),
        "classify_after_training": percentiles(classify_after),
        "evaluate_64_texts": percentiles([r["seconds"] for r in records if r["kind"] == "evaluate"]),
        "grid": {
            "methods": GRID_METHODS,
            "steps": grid_steps,
            "seconds_under_load": round(grid_seconds, 1),
            "seconds_alone": round(alone_phase.seconds, 1),
            "rows": grid_answer(grid_alone),
        },
        "errors": len(errors),
        "error_samples": errors[:5],
        "mismatches": len(mismatches),
        "mismatch_samples": mismatches[:5],
        "classify_p95_target_s": CLASSIFY_P95_TARGET_S,
        "met": (
            not errors
            and not mismatches
            and bool(classify_during)
            and percentiles(classify_during)["p95_s"] <= CLASSIFY_P95_TARGET_S
        ),
        "others_cpu_share": round(phase.others_cpu_share, 3),
    }


def sessions_phase(url: str, process: subprocess.Popen, temp_dir: Path, sessions: int) -> dict:
    warm = Client(url, verbose=False)  # every handler has run once before "the start" is read
    lora_run = compare_args(["lora"], 1, "4", 8)
    warm.predict(*lora_run, api_name="/compare")
    warm.close()
    time.sleep(3)
    start_rss, (start_files, start_bytes) = rss_mb(process.pid), temp_usage(temp_dir)
    peak = start_rss
    log(f"sessions: start {start_rss:.0f} MB resident, {start_files} temporary files")
    with Phase("sessions", log, [process.pid]):
        for i in range(sessions):
            client = Client(url, verbose=False)
            client.predict(*classify_args(TEXTS[i % len(TEXTS)]), api_name="/classify")
            client.predict(*evaluate_args("none", 16), api_name="/evaluate")
            client.predict(*lora_run, api_name="/compare")
            peak = max(peak, rss_mb(process.pid))
            client.close()
            if (i + 1) % 10 == 0:
                resident, files = rss_mb(process.pid), temp_usage(temp_dir)[0]
                log(f"  {i + 1} sessions: {resident:.0f} MB resident, {files} temporary files")
    time.sleep(5)  # the last sessions' unload events
    end_rss, (end_files, end_bytes) = rss_mb(process.pid), temp_usage(temp_dir)
    rss_change = (end_rss - start_rss) / start_rss
    bytes_change = (end_bytes - start_bytes) / max(start_bytes, 1)
    return {
        "sessions": sessions,
        "rss_mb_start": round(start_rss, 1),
        "rss_mb_end": round(end_rss, 1),
        "rss_mb_peak": round(peak, 1),
        "rss_change_share": round(rss_change, 4),
        "temp_files_start": start_files,
        "temp_files_end": end_files,
        "temp_bytes_start": start_bytes,
        "temp_bytes_end": end_bytes,
        "temp_bytes_change_share": round(bytes_change, 4),
        "tolerance_share": SESSION_TOLERANCE,
        "met": rss_change <= SESSION_TOLERANCE
        and end_files <= start_files * (1 + SESSION_TOLERANCE)
        and bytes_change <= SESSION_TOLERANCE,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--visitors", type=int, default=8)
    parser.add_argument("--grid-steps", type=int, default=20)
    parser.add_argument("--sessions", type=int, default=50)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="peftlab-serve-load-"))
    temp_dir = work / "gradio"
    temp_dir.mkdir()
    process, url, cold = cold_start(temp_dir)
    try:
        load = load_phase(url, process.pid, args.visitors, args.grid_steps)
        sessions = sessions_phase(url, process, temp_dir, args.sessions)
    finally:
        process.terminate()
        process.wait(timeout=60)
        log(f"app log: {work / 'app.log'}")
    report = {"cold_start": cold, "load": load, "sessions": sessions}
    print(json.dumps(report, indent=2))
    print(json.dumps(report))
    shutil.rmtree(temp_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
