"""The same grid in this process and on a local Ray, in one run: wall time and the rows each gives.

Run from the repository root (after `pip install -r requirements-ray.txt`):

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/ray_grid.py [--seeds 13,21] [--test-limit 200] [--workers 2]

The grid is `peftlab.compare.run_grid` with six methods (prompt tuning, P-tuning, prefix tuning, LoRA, head-only,
prompt-based full fine-tuning) x seeds x K=16 per class, each with its shipped defaults, on a stratified subset of
`--test-limit` test texts. It runs twice: in-process with torch using `--workers` threads, then on a Ray started
here with `--workers` workers of one thread each (`peftlab.backends.RayBackend`). Ray's start-up (`ray.init`)
is timed apart; the workers' model loading is inside Ray's grid time, as a user waits for it. Reports both wall
times, their ratio, each run's training time on either backend, and whether every row (accuracy, macro-F1, steps,
status) and every test prediction is the same (training runs in bf16 autocast on CPUs that have it, whose sums
depend on the number of torch threads: `--workers 1` compares one thread with one worker of one thread).

`--dispatch-too` runs the Ray grid a second time with a Ray task per run that loads the model itself
(`RayBackend(dispatch="task")`) instead of an actor per worker that loads it once, and reports both wall times
and what a run would pay in a fresh worker process (process, imports, model).

Then (`--tune-trials`, 0 for none; `--no-grid` for it alone) prompt tuning's learning rate is searched with Ray
Tune on dev log-likelihood (`peftlab.search`, loguniform 1e-3 to 1e-1, ASHA), and the winner and the default are
trained on the seeds and scored on the same test texts: every trial, the wall time, the chosen rate, both means.

stdout gets one JSON object (indent 2); progress lines go to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

import ray  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import Phase, forget_memos, logger  # noqa: E402
from peftlab.backends import RayBackend  # noqa: E402
from peftlab.cloze import ClozeSetup  # noqa: E402
from peftlab.compare import GridRow, run_grid  # noqa: E402
from peftlab.methods import method_config  # noqa: E402
from peftlab.models import load_lm  # noqa: E402
from peftlab.search import TuneConfig, parse_search, run_search  # noqa: E402
from peftlab.tasks import load_task  # noqa: E402
from peftlab.tuning import TrainSettings  # noqa: E402

TEMPLATE = "Review: {text}\nSentiment:{mask}"
VERBALIZER = {"negative": ["negative"], "positive": ["positive"]}
METHODS = "prompt-tuning,p-tuning,prefix-tuning,lora,head,full"
SPEEDUP_TARGET = 1.3
COMPARED = ("test_accuracy", "macro_f1", "steps", "status")
TIMED = ("train_seconds", "seconds_per_step")
log = logger("ray_grid")


def grid(lm, task, args, backend=None) -> tuple[dict, float, float]:
    """({(method, seed): (row values, predictions)}, wall seconds, others' CPU share) of one grid."""
    setup = ClozeSetup.build(task, TEMPLATE, VERBALIZER, calibration="mean")
    methods = [method_config(name) for name in args.methods.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = {}
    name = "ray" if backend else "local"
    forget_memos(lm)  # every grid pays for its own zero-shot scoring and frozen features
    items = run_grid(lm, task, setup, methods, seeds, [args.shots], TrainSettings(), args.test_limit, backend=backend)
    with Phase(f"{name} grid", log) as phase:
        for item in items:
            if isinstance(item, GridRow):
                row = item.values
                rows[(row["method"], row["seed"])] = (row, item.result.predictions if item.result else None)
                log(f"  {name}: {row['method']:>14} seed={row['seed']}: {row['test_accuracy']:.4f} ({row['status']})")
    return rows, phase.seconds, phase.others_cpu_share


def grid_comparison(lm, task, args) -> dict:
    local, local_seconds, local_others = grid(lm, task, args)
    with Phase("ray.init", log) as start:
        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
    remote, ray_seconds, ray_others = grid(lm, task, args, RayBackend(threads=1, workers=args.workers))
    dispatch = {}
    if args.dispatch_too:
        tasks, task_seconds, _ = grid(lm, task, args, RayBackend(threads=1, workers=args.workers, dispatch="task"))
        dispatch = {
            "task_per_run_seconds": round(task_seconds, 1),
            "actor_per_worker_seconds": round(ray_seconds, 1),
            "task_over_actor": round(task_seconds / ray_seconds, 3),
            "fresh_process_seconds": round(fresh_process_seconds(lm.name), 2),
            "same_rows_and_predictions": same_rows(remote, tasks),
        }

    same = same_rows(local, remote)
    speedup = local_seconds / ray_seconds
    return {
        "methods": args.methods.split(","),
        "seeds": [int(s) for s in args.seeds.split(",")],
        "K": args.shots,
        "test_texts": args.test_limit,
        "runs": len(local) - 1,
        "local": {
            "torch_threads": args.workers,
            "seconds": round(local_seconds, 1),
            "others_cpu_share": round(local_others, 3),
        },
        "ray": {
            "workers": args.workers,
            "threads_per_worker": 1,
            "init_seconds": round(start.seconds, 1),
            "seconds": round(ray_seconds, 1),
            # Ray's workers are processes of their own, so they count here: near 1 means both cores were busy
            "others_cpu_share_with_ray_workers": round(ray_others, 3),
        },
        "speedup": round(speedup, 3),
        "same_rows_and_predictions": same,
        "rows": [
            {
                "method": m,
                "seed": s,
                **{c: row[c] for c in COMPARED + TIMED},
                "on_ray": {c: remote[(m, s)][0][c] for c in COMPARED + TIMED},
            }
            for (m, s), (row, _) in local.items()
            if (m, s) in remote
        ],
        "targets": {f"ray >= {SPEEDUP_TARGET}x faster": speedup >= SPEEDUP_TARGET, "identical rows": same},
    } | ({"dispatch": dispatch} if dispatch else {})


def same_rows(one: dict, other: dict) -> bool:
    """Whether two grids' rows (accuracy, macro-F1, steps, status) and test predictions are all the same."""
    return sorted(one) == sorted(other) and all(
        all(one[key][0][c] == other[key][0][c] for c in COMPARED) and one[key][1] == other[key][1] for key in one
    )


def fresh_process_seconds(model: str) -> float:
    """What a run would pay before training in a process of its own: Python, torch and peftlab imported and the
    model loaded on one thread, timed as a new process. Ray reuses a task's worker process and peftlab keeps a loaded
    model per process, so a task per run pays this on each worker process's first run only; an actor, once."""
    code = "import torch; torch.set_num_threads(1); from peftlab.models import load_lm; "
    code += f"load_lm({model!r}, dtype='fp32')"
    with Phase("a new process loads the model", log) as phase:
        subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parent.parent)
    return phase.seconds


def tune_benchmark(lm, task, args) -> dict:
    """Prompt tuning's learning rate searched with Ray Tune (ASHA, one trial per worker at a time) on seed 13's dev
    texts, then the winner and the default trained on the seeds and scored on test."""
    config = TuneConfig(
        method="prompt-tuning",
        trials=args.tune_trials,
        shots=args.shots,
        seeds=tuple(int(s) for s in args.seeds.split(",")),
        test_limit=args.test_limit,
    )
    space = parse_search(config.method, ["learning_rate=loguniform:1e-3:1e-1"])
    setup = ClozeSetup.build(task, TEMPLATE, VERBALIZER, calibration="mean")
    with Phase("tune", log) as phase:
        *_, result = run_search(
            lm, task, setup, config, space, TrainSettings(), backend=RayBackend(workers=args.workers)
        )
    summary = result.summary()
    log(f"  best learning rate {result.best['settings']['learning_rate']:.4g}: {summary['tuned_test_accuracy_mean']}")
    return {
        "space": summary["space"],
        "trials": summary["trials"],
        "seconds": round(phase.seconds, 1),
        "search_seconds": summary["search_seconds"],
        "best_learning_rate": result.best["settings"]["learning_rate"],
        "default_learning_rate": method_config(config.method).learning_rate,
        "tuned_test_accuracy_mean": summary["tuned_test_accuracy_mean"],
        "default_test_accuracy_mean": summary["default_test_accuracy_mean"],
        "rows": summary["rows"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", default=METHODS)
    parser.add_argument("--seeds", default="13,21")
    parser.add_argument("--shots", type=int, default=16)
    parser.add_argument("--test-limit", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2, help="torch threads in-process, Ray workers of 1 thread")
    parser.add_argument("--tune-trials", type=int, default=8, help="trials of the learning-rate search (0: none)")
    parser.add_argument("--no-grid", action="store_true", help="only the learning-rate search")
    parser.add_argument("--dispatch-too", action="store_true", help="the Ray grid again with a task per run")
    args = parser.parse_args()

    task = load_task("rt-sentiment")
    torch.set_num_threads(args.workers)
    lm = load_lm(dtype="fp32")  # as the compare command trains
    result = {} if args.no_grid else grid_comparison(lm, task, args)
    if args.tune_trials:
        if not ray.is_initialized():
            ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
        result["tune"] = tune_benchmark(lm, task, args)
    ray.shutdown()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
