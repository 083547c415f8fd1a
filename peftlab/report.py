"""One comparison of every stored result on one task and model: a table per test split, charts, a report page.

Results compare only on the same test texts, so rows are grouped by their test fingerprint first, and each
split gets its own table, never mixed with another's. Within a split, rows of one method, K and settings
are one line: mean and sample std (n - 1) of accuracy over seeds (LM-BFF reports mean and std over seeds; its
tables divide by n, 18 % less at 3 seeds; a seed run again counts once, its latest run: the same zero-shot stored
by two tabs is no second run), the runs, trainable parameters, seconds, and the difference from the baseline
(calibrated zero-shot when there is one) with a 95 % paired bootstrap interval over the texts and, where a line has
several seeds, over its seeds too (`peftlab.stats`). A line whose interval includes 0 is "not distinguishable" from
the baseline.

`report_html` renders the same as one self-contained page; it depends on the rows alone (no clock, fixed
chart ids), so writing it twice from the same store gives the same bytes.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from peftlab.config import counted
from peftlab.metrics import confusion_matrix, leaning_label
from peftlab.plots import accuracy_vs_parameters, accuracy_vs_seconds, route_label, score_kl_frontier
from peftlab.rlhf.stored import route_settings, stored_routes
from peftlab.stats import paired_difference
from peftlab.store import ResultRow, scored_note, stopped_at

# Preferred baselines, best first: zero-shot with mean-centring calibration, then contextual, then raw.
BASELINES = ("zero-shot · mean", "zero-shot · contextual", "zero-shot")
# Settings that differ between the runs of one line, at any depth of a row's settings: the seed (a config's own
# `seed`, PET's `seeds` of a one-seed run), times, and what a search found (AutoPrompt's filled-in prompt).
PER_RUN_SETTINGS = ("seed", "seeds", "run_seconds", "found_template")


@dataclass
class SplitComparison:
    """The lines of one test split (one fingerprint) of one task and model."""

    task: str
    model: str
    fingerprint: str
    texts: int
    scored: str  # what the texts are, in words (`store.scored_note`): "20 of 1000 test texts", "all 40 rows (...)"
    support: dict
    baseline: str | None
    table: pd.DataFrame
    # lines whose runs repeat a seed (`_repeat_notes`), stopped before the end (`_stopped_notes`), lean on one label,
    # or read their texts with another prompt than the baseline (`_prompt_notes`)
    notes: list[str]
    rows: list[ResultRow]  # every stored row of the split, the runs counted in its lines and the others

    @property
    def baseline_said(self) -> str:
        """The baseline's name, or that none was scored on these texts and how to get one: "no zero-shot result stored
        yet" stood beside four stored zero-shot rows on other texts (the Start tab scores 100, the Cloze tab 200),
        which cannot be paired with these."""
        if self.baseline:
            return self.baseline
        return (
            f"none on these {self.texts} texts (zero-shot scored on other texts cannot be paired with them: the "
            "standard comparison and a Soft prompts grid score it on their own test texts, and the Cloze tab does with "
            f"Test texts {self.texts} where the task has a test split)"
        )


def shown(row: ResultRow) -> bool:
    """Whether a comparison shows `row`: an RLHF evaluation, or a classification row with its accuracy and per-text
    predictions (a row imported without them cannot be paired)."""
    return row.kind == "rlhf" or (row.accuracy is not None and bool(row.predictions))


def compare(rows: Sequence[ResultRow]) -> list[SplitComparison]:
    """One SplitComparison per test split among `rows` (classification rows only), the split with the most runs
    first (`_lines`: a run stored twice counts once, or one imported copy put its split above the one compared).
    A split is its fingerprint and its gold labels: an imported row with a split's fingerprint but other labels (30
    where the split has 40) is not paired with its rows (it made every comparison of the task and model fail)."""
    scored = [r for r in rows if r.kind != "rlhf" and shown(r)]
    splits: dict[tuple, list[ResultRow]] = {}
    for row in scored:
        splits.setdefault((row.task, row.model, row.test_fingerprint, tuple(row.gold)), []).append(row)
    lined = {split: _lines(split_rows) for split, split_rows in splits.items()}  # grouped once, to order and compare

    def runs(split: tuple) -> int:
        return sum(len(line) for line in lined[split].values())

    ordered = sorted(splits, key=lambda split: (-runs(split), split))
    return [_compare_split(*split[:3], splits[split], lined[split]) for split in ordered]


def _line_key(row: ResultRow) -> tuple:
    return row.method, row.k, json.dumps(_chosen(row.settings), sort_keys=True, default=str)


def _lines(rows: Sequence[ResultRow]) -> dict[tuple, list[ResultRow]]:
    """The rows (oldest first) grouped into the lines of a comparison (`_line_key`: method, K and settings), in order
    of first row, each line's runs one per seed (the latest): the same seed run again, or a zero-shot (no seed)
    stored by two tabs, is the same run, not a replicate for the spread over seeds."""
    lines: dict[tuple, dict] = {}
    for row in rows:
        lines.setdefault(_line_key(row), {})[row.seed] = row
    return {key: list(by_seed.values()) for key, by_seed in lines.items()}


def _line_told(lines: dict[tuple, list[ResultRow]]) -> dict[tuple, list[str]]:
    """What tells each line apart from the other lines of its method and K, for its name in tables, charts and notes
    (`_named`): the settings they differ in ('templates "{text} {mask}"'), none for a line alone. The Cloze tab's
    template and AutoPrompt's baseline were two lines both named "zero-shot", at different accuracies."""
    groups: dict[tuple, list[tuple]] = {}
    for key in lines:
        groups.setdefault(key[:2], []).append(key)
    told_by_key = {}
    for keys in groups.values():
        settings = [_flat(json.loads(key[2])) for key in keys]
        paths = dict.fromkeys(path for flat in settings for path in flat)
        values = {path: tuple(json.dumps(flat.get(path)) for flat in settings) for path in paths}
        # one setting at two paths (a sweep's varied value, also in its method's config) is told once
        told_apart = {(_leaf(path), values[path]): path for path in paths if len(set(values[path])) > 1}
        differing = list(told_apart.values())
        shown = {path: _shown_apart([flat.get(path) for flat in settings]) for path in differing[:2]}
        for index, key in enumerate(keys):
            told = [f"{_leaf(path)} {shown[path][index]}" for path in differing[:2]]
            told_by_key[key] = [*told, *(["…"] if len(differing) > 2 else [])]
    return told_by_key


def _shown_apart(values: list) -> list[str]:
    """Each value as `_setting_text` shows it, cut (`_cut`), unless two different values would read the same: then
    each is shown around where they first differ ('"…movie was {mask}!"'). Two templates that differ in their last
    character were two lines named alike."""
    texts = [_setting_text(value) for value in values]
    shown = [_cut(text) for text in texts]
    if len(set(shown)) == len(set(texts)):
        return shown
    start = max(0, len(os.path.commonprefix(sorted(set(texts)))) - 12)
    return [_cut(("…" if start else "") + text[start:]) for text in texts]


def _leaf(path: str) -> str:
    return path.rsplit(".", 1)[-1]


def _named(method: str, told: list[str]) -> str:
    return f"{method} ({', '.join(told)})" if told else method


def _flat(settings, path: str = "") -> dict:
    """Nested settings as one level, by dotted path ("config.num_virtual_tokens")."""
    if not isinstance(settings, dict) or not settings:
        return {path: settings}
    return {leaf: value for k, v in settings.items() for leaf, value in _flat(v, f"{path}.{k}" if path else k).items()}


def _setting_text(value) -> str:
    """A setting's value as a line's name shows it: a list of one as its item, a verbalizer (stored as a JSON text) as
    its lines ("negative: bad / positive: good, great")."""
    value = value[0] if isinstance(value, list) and len(value) == 1 else value
    text = json.dumps(value, ensure_ascii=False)
    with contextlib.suppress(ValueError, TypeError, AttributeError):  # '"{\"negative\": [\"neg…' named a line
        words = json.loads(value).items()
        text = " / ".join(f"{label}: {', '.join(w) if isinstance(w, list) else w}" for label, w in words)
    return text


def _cut(text: str, width: int = 36) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _repeat_notes(
    rows: Sequence[ResultRow], lines: dict[tuple, list[ResultRow]], told: dict[tuple, list[str]]
) -> list[str]:
    """A sentence per line with runs that repeat a seed (counted once, `_lines`)."""
    stored: dict[tuple, int] = {}
    for row in rows:
        stored[_line_key(row)] = stored.get(_line_key(row), 0) + 1
    notes = []
    for key, runs in lines.items():
        if stored[key] > len(runs):
            name = _noted(key, told)
            if len(runs) == 1 and runs[0].seed is None:
                notes.append(
                    f"{name}: stored {stored[key]} times with the same settings, counted once (the latest): the same "
                    "run, not a replicate."
                )
            else:
                notes.append(
                    f"{name}: {stored[key]} stored runs of {counted(len(runs), 'seed')}; each seed counts once (its "
                    "latest run)."
                )
    return notes


def _stopped_notes(lines: dict[tuple, list[ResultRow]], told: dict[tuple, list[str]]) -> list[str]:
    """A sentence per line with runs stopped before their end (Stop, a closed page): a stopped run was counted in its
    line's mean with no sign that it had not trained to the end."""
    notes = []
    for key, runs in lines.items():
        stopped = [how for r in runs if (how := _stopped(r))]
        if stopped:
            which = "its run" if len(runs) == 1 else f"{len(stopped)} of its {len(runs)} runs"
            notes.append(f"{_noted(key, told)}: {which} {'; '.join(stopped)}, counted as it was then.")
    return notes


def _stopped(row: ResultRow) -> str:
    """How `row`'s run was stopped before its end, "" when it was not: a training run's status ("stopped at step 1
    of 3"), an AutoPrompt search's setting ("after 2 of 20 iterations")."""
    status = str(row.metrics.get("status", ""))
    if stopped_at(status):
        return status
    return f"stopped {row.settings['stopped']}" if row.settings.get("stopped") else ""


def _chosen(settings):
    """The settings without PER_RUN_SETTINGS, at every depth: what a person chose for every run of a line."""
    if isinstance(settings, dict):
        return {k: _chosen(v) for k, v in settings.items() if k not in PER_RUN_SETTINGS}
    return settings


def _noted(key: tuple, told: dict[tuple, list[str]]) -> str:
    """A line as a note names it: its name, with its K where it has one ("lora (K 16)", "prompt-tuning
    (num_virtual_tokens 5, K 16)")."""
    method, k = key[0], key[1]
    return _named(method, [*told[key], *([f"K {k}"] if k else [])])


def _prompt(row: ResultRow) -> tuple:
    """The prompt a row's method read its texts with: its templates and verbalizer (None for methods with neither in
    their settings: AutoPrompt's template has trigger slots, PET has patterns)."""
    return json.dumps(row.settings.get("templates")), json.dumps(row.settings.get("verbalizer"))


NO_PROMPT = (json.dumps(None), json.dumps(None))  # `_prompt` of a method with no template or verbalizer setting


def _baseline(lines: dict[tuple, list[ResultRow]]) -> tuple | None:
    """The line the others are compared with: of the zero-shot lines (BASELINES), the one whose prompt (`_prompt`) the
    most other runs share; of equals, the first calibration of BASELINES, then the latest started. The latest alone
    was the baseline: after an AutoPrompt search stored zero-shot on its template without the trigger, methods trained
    on another template were said to beat zero-shot by what their template alone gave. Then the calibration came
    first: a mean-calibrated zero-shot of the Cloze tab on another template was chosen over the plain zero-shot a grid
    scored on its own, and LoRA was said to beat zero-shot by 28.7 points where it gained 3.8 on its own template's
    zero-shot."""
    others = [run for key, runs in lines.items() if key[0] not in BASELINES for run in runs]
    candidates = [key for key in lines if key[0] in BASELINES]
    if not candidates:
        return None

    def rank(key: tuple) -> tuple[int, int]:
        return sum(_prompt(run) == _prompt(lines[key][0]) for run in others), -BASELINES.index(key[0])

    return max(reversed(candidates), key=rank)  # max keeps the first of equals: the latest started


def _compare_split(
    task: str, model: str, fingerprint: str, rows: list[ResultRow], lines: dict[tuple, list[ResultRow]]
) -> SplitComparison:
    told = _line_told(lines)
    names = {key: _named(key[0], told[key]) for key in lines}
    gold = rows[0].gold
    baseline = _baseline(lines)
    baseline_runs = [r.predictions for r in lines[baseline]] if baseline else None
    labels = list(rows[0].per_class_f1)  # label names in the task's order
    records = []
    for key, runs in lines.items():
        accuracies = [r.accuracy for r in runs]
        record = {
            "method": names[key],
            "K": key[1] if key[1] is not None else 0,
            "runs": len(runs),
            "accuracy_mean": float(np.mean(accuracies)),
            "accuracy_std": float(np.std(accuracies, ddof=1)) if len(runs) > 1 else 0.0,
            "macro_f1_mean": float(np.mean([r.macro_f1 for r in runs])),
            **_per_class_means(runs, labels),
            "trainable_params": int(runs[0].trainable_params),
            # unknown without the model's size (an imported row): "0%" beside its parameters was false
            "trainable_share": runs[0].trainable_params / runs[0].metrics["model_params"]
            if runs[0].metrics.get("model_params")
            else np.nan,
            "seconds_mean": float(np.mean([r.train_seconds + r.scoring_seconds for r in runs])),
            "vs_baseline": np.nan,
            "ci_low": np.nan,
            "ci_high": np.nan,
            "verdict": "baseline" if key == baseline else "",  # the row the others are compared with, marked
        }
        if baseline_runs is not None and key != baseline:
            difference = paired_difference(gold, [r.predictions for r in runs], baseline_runs)
            record.update(
                vs_baseline=difference.difference,
                ci_low=difference.low,
                ci_high=difference.high,
                verdict=("better" if difference.low > 0 else "worse")
                if difference.distinguishable
                else "not distinguishable",
            )
        records.append(record)
    table = pd.DataFrame(records)
    table["_order"] = [key != baseline for key in lines]  # the baseline first (two lines may be named alike), by size
    table = table.sort_values(["_order", "trainable_params", "method", "K"], kind="stable").drop(columns="_order")
    table = table.reset_index(drop=True)
    support = {label: 0 for label in labels}
    for index in gold:
        support[labels[index]] += 1
    notes = [
        *_repeat_notes(rows, lines, told),
        *_stopped_notes(lines, told),
        *_leaning_lines(lines, labels, told),
        *_prompt_notes(lines, baseline, told),
        *_one_run_notes(lines, baseline, told),
    ]
    # rows stored before the counts were recorded have none: their number of texts is all that is known
    described = next((r.settings for r in rows if "rows_scored" in r.settings), None)
    scored = scored_note(described) if described else f"{len(gold)} texts"
    return SplitComparison(
        task, model, fingerprint, len(gold), scored, support, names[baseline] if baseline else None, table, notes, rows
    )


def _per_class_means(runs: Sequence[ResultRow], labels: Sequence[str]) -> dict[str, float]:
    """Each label's F1, mean over `runs`, as "f1 <label>" columns (`per_class_table`): stored with every row, shown
    nowhere before. By position, under the split's first row's `labels`: the fingerprint holds the label numbers, not
    their names, so an upload's 'neg'/'pos' and 'negative'/'positive' share a split (looked up by name, the second
    failed the whole comparison)."""
    per_run = [list(r.per_class_f1.values()) for r in runs]
    return {
        f"f1 {label}": float(np.mean([values[i] for values in per_run if i < len(values)]))
        for i, label in enumerate(labels)
    }


def _one_run_notes(
    lines: dict[tuple, list[ResultRow]], baseline: tuple | None, told: dict[tuple, list[str]]
) -> list[str]:
    """A sentence per trained line of one run compared with the baseline: its interval resamples the test texts
    alone, not another draw of seeds (the K examples, the initialisation), so its verdict is a weaker one than a line
    of several seeds gets (simulated: 16 to 29 % of one-seed lines called better or worse with no true difference,
    against 5 % with 3 seeds)."""
    if baseline is None:
        return []
    return [
        f"{_noted(key, told)}: one run (seed {runs[0].seed}): its interval covers another draw of test texts, not of "
        "seeds, so its verdict may not hold for another seed; run more seeds to tell."
        for key, runs in lines.items()
        if key != baseline and len(runs) == 1 and runs[0].seed is not None
    ]


def _prompt_notes(
    lines: dict[tuple, list[ResultRow]], baseline: tuple | None, told: dict[tuple, list[str]]
) -> list[str]:
    """A sentence per line that read its texts with another template or verbalizer than the baseline (lines without
    either, AutoPrompt's and PET's, aside): its difference from the baseline holds what its prompt gives too."""
    if baseline is None:
        return []
    base = _prompt(lines[baseline][0])
    notes = []
    for key, runs in lines.items():
        prompt = _prompt(runs[0])
        if key == baseline or prompt == base or prompt == NO_PROMPT:
            continue
        differing = [
            (name, theirs) for name, mine, theirs in zip(("template", "verbalizer"), prompt, base) if mine != theirs
        ]
        shown = [f"{name} {_cut(_setting_text(json.loads(theirs)))}" for name, theirs in differing]
        notes.append(
            f"{_noted(key, told)}: read its texts with another {' and '.join(name for name, _ in differing)} than "
            f"the baseline ({', '.join(shown)}): its difference holds what its prompt gives, as well as what the "
            "method does."
        )
    return notes


def leaning_notes(rows: Sequence[ResultRow], names: Sequence[str]) -> list[str]:
    """A sentence per line of a comparison (method, K and settings; its runs among `rows`, scored on a task with the
    label `names`) with runs whose predictions lean on one label far more than the gold labels do
    (`metrics.leaning_label`): a method that calls 99 % of the texts 'positive' reaches 50 % on a balanced split
    without reading them, and its line should not be read as a score."""
    lines = _lines(rows)
    return _leaning_lines(lines, names, _line_told(lines))


def _leaning_lines(
    lines: dict[tuple, list[ResultRow]], labels: Sequence[str], told: dict[tuple, list[str]]
) -> list[str]:
    notes = []
    for key, runs in lines.items():
        leaning = []
        for run in runs:
            if (lean := leaning_label(confusion_matrix(run.gold, run.predictions, len(labels)))) is not None:
                leaning.append(lean)
        if leaning:
            label, predicted, gold_share = max(leaning, key=lambda lean: lean[1])
            which = f"{len(leaning)} of {len(runs)} runs" if len(runs) > 1 else "its run"
            up_to = "up to " if len(leaning) > 1 else ""
            notes.append(
                f"{_noted(key, told)}: {which} predicted '{labels[label]}' for {up_to}{predicted:.0%} of "
                f"the texts, against {gold_share:.0%} of the gold labels: an accuracy of a model leaning on one label "
                "says little about reading the texts."
            )
    return notes


def short_figure(value: float) -> str:
    """A time or rate as a table shows it: whole from 10 up ("60"), two significant digits below ("0.24", "3.1"):
    zero-shot's 0.24 s read "0" beside the chart that placed it at 0.24."""
    return f"{value:.0f}" if abs(value) >= 10 else f"{value:.2g}"


def share_text(value: float) -> str:
    """A trainable share as every table writes it: percent with three significant digits (LoRA "0.343%", a head
    "0.000858%", full fine-tuning "100%"): the Soft prompts table said "0.3%" where Compare said "0.343%". NaN (a row
    without its model's size) is "share unknown"."""
    return "share unknown" if np.isnan(value) else f"{100 * value:.3g}%"


DISPLAY_COLUMNS = (
    "method",
    "K",
    "runs",
    "accuracy",
    "macro-F1",
    "trainable",
    "seconds (training + scoring)",  # a grid's "training seconds" leave the scoring out
    "vs baseline (points, 95% CI)",
    "verdict",
)


def _points(difference: float) -> str:
    """An accuracy difference in points, signed, with one decimal, or two significant digits where one decimal would
    read 0 for a difference that is not: "[-25.0, -0.0]" beside "worse" read as an interval that reaches 0, and so
    did "+0.00" (two decimals) for 0.004 points."""
    shown = f"{100 * difference:+.1f}"
    return f"{100 * difference:+.2g}" if float(shown) == 0 and difference != 0 else shown


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """The comparison as people read it: percentages, mean ± std, the difference with its interval, in points
    (DISPLAY_COLUMNS)."""
    values = (
        table["method"],
        table["K"],
        table["runs"],
        # one run has no spread: "± 0.0%" read as if one had been measured
        [
            f"{m:.1%} ± {s:.1%}" if n > 1 else f"{m:.1%}"
            for m, s, n in zip(table["accuracy_mean"], table["accuracy_std"], table["runs"])
        ],
        table["macro_f1_mean"].map(lambda v: f"{v:.3f}"),
        [f"{p:,} ({share_text(s)})" if p else "0" for p, s in zip(table["trainable_params"], table["trainable_share"])],
        table["seconds_mean"].map(short_figure),
        [
            "" if np.isnan(d) else f"{_points(d)} [{_points(lo)}, {_points(hi)}]"
            for d, lo, hi in zip(table["vs_baseline"], table["ci_low"], table["ci_high"])
        ],
        table["verdict"],
    )
    return pd.DataFrame(dict(zip(DISPLAY_COLUMNS, values, strict=True)))


def per_class_table(table: pd.DataFrame) -> pd.DataFrame:
    """Each line's F1 of every label (the comparison table's "f1 <label>" columns), three decimals, beside its method
    and K."""
    labels = [column for column in table.columns if column.startswith("f1 ")]
    shown = table[["method", "K", *labels]].copy()
    shown[labels] = shown[labels].map(lambda v: f"{v:.3f}")
    return shown.rename(columns={column: f"F1 {column[3:]}" for column in labels})


@dataclass
class RouteComparison:
    """The stored RLHF evaluations of one task and model on one set of held-out prompts: a line per route
    (`rlhf.stored.stored_routes`), and the summary its score-KL frontier draws."""

    task: str
    model: str
    fingerprint: str
    labeler: str
    prompts: int
    results: int
    table: pd.DataFrame
    summary: dict

    @property
    def status(self) -> str:
        return (
            f"{counted(self.results, 'RLHF result')} on the same "
            f"{counted(self.prompts, 'held-out prompt')}: the {self.labeler} score and the KL to the SFT model (RLHF "
            "has no accuracy)."
        )

    def display(self) -> pd.DataFrame:
        """The lines as people read them: the route as the chart names it, score ± std over runs (the score alone
        for one run, as the classification table leaves its std blank), the SFT model's, the gain, KL and seconds."""
        table = self.table
        return pd.DataFrame(
            {
                "method": table["method"].map(route_label),
                "runs": table["runs"],
                f"{self.labeler} score": [
                    f"{m:+.3f}" + (f" ± {s:.3f}" if runs > 1 else "")
                    for m, s, runs in zip(table["score_mean"], table["score_std"], table["runs"])
                ],
                "SFT's score": table["sft_score"].map("{:+.3f}".format),
                "gain": table["gain"].map("{:+.3f}".format),
                "reward": table["reward"].map(lambda v: "" if pd.isna(v) else f"{v:+.2f}"),
                "KL to SFT (nats)": table["kl"].map("{:.2f}".format),
                "seconds": table["seconds"].map(short_figure),
            }
        )

    def frontier(self):
        return score_kl_frontier(self.summary, list(self.table["method"]), f"{self.labeler} score")


def compare_routes(rows: Sequence[ResultRow]) -> list[RouteComparison]:
    """One RouteComparison per task, model and set of held-out prompts among `rows` (RLHF rows only), the one with
    most rows first.

    Raises:
        PeftlabError: a stored RLHF row without its scores (`stored_routes`).
    """
    groups: dict[tuple, list[ResultRow]] = {}
    for row in rows:
        if row.kind == "rlhf":
            groups.setdefault((row.task, row.model, row.test_fingerprint), []).append(row)
    comparisons = []
    for (task, model, prompts_print), group in sorted(groups.items(), key=lambda item: (-len(item[1]), item[0])):
        lines = _route_lines(group)
        table, summary = stored_routes(lines)
        metrics = group[0].metrics
        comparisons.append(
            RouteComparison(
                task, model, prompts_print, metrics["labeler"], metrics["prompts"], len(group), table, summary
            )
        )
    return comparisons


def _route_lines(rows: Sequence[ResultRow]) -> dict[str, list[ResultRow]]:
    """Stored RLHF evaluations as lines, by method and the settings of its route (`route_settings`, `_chosen`: seeds
    aside), each named by what tells it apart from the other lines of its method ('ppo (beta 0.2)', `_line_told`); an
    evaluation stored twice (an export imported again) is one run. By method alone, the same PPO stored twice read
    "2 runs, +0.400 ± 0.000", and PPO runs of other settings were averaged into one line."""
    lines: dict[tuple, dict[str, ResultRow]] = {}
    for row in rows:
        chosen = _chosen(route_settings(row.method, row.settings))
        key = (row.method, None, json.dumps(chosen, sort_keys=True, default=str))
        run = json.dumps([row.settings, row.metrics, row.train_seconds], sort_keys=True, default=str)
        lines.setdefault(key, {})[run] = row
    told = _line_told(lines)
    return {_named(key[0], told[key]): list(runs.values()) for key, runs in lines.items()}


def report_html(comparisons: Sequence[SplitComparison], rows: Sequence[ResultRow]) -> str:
    """One self-contained page: per split, the table, both charts and every row's settings; then the RLHF
    evaluations among `rows` the same way (`compare_routes`: a table and the score-KL frontier).

    Raises:
        PeftlabError: a stored RLHF row without its scores.
    """
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>peftlab comparison</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;"
        "font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}pre{font-size:11px;"
        "white-space:pre-wrap}</style></head><body>",
    ]
    routes = compare_routes(rows)
    if not comparisons and not routes:
        parts.append("<p>No stored results to compare yet.</p>")
    plotly = iter(["inline"])  # the page's first chart carries plotly.js; ids are fixed: the same rows, the same bytes

    def chart(figure, div_id: str) -> str:
        return figure.to_html(full_html=False, include_plotlyjs=next(plotly, False), div_id=div_id)

    for number, split in enumerate(comparisons):
        support = ", ".join(f"{count} {label}" for label, count in split.support.items())
        parts += [
            f"<h1>{html.escape(split.task)} · {html.escape(split.model)}</h1>",
            f"<p>Test split {html.escape(split.fingerprint)}: {html.escape(split.scored)}; {html.escape(support)}. "
            f"Baseline: {html.escape(split.baseline_said)}. Accuracy is the mean ± sample std (n − 1) over seeds. "
            "Differences are accuracy points with a 95 % paired bootstrap interval over the texts, and over the seeds "
            "where a line has several.</p>",
            display_table(split.table).to_html(index=False, escape=True),
            "<p>F1 of each label (mean over runs):</p>",
            per_class_table(split.table).to_html(index=False, escape=True),
            *(f"<p>⚠️ {html.escape(note)}</p>" for note in split.notes),
        ]
        summary = split.table.rename(columns={"seconds_mean": "seconds"})
        parts += [
            chart(accuracy_vs_parameters(summary), f"chart-{number}-0"),
            chart(accuracy_vs_seconds(summary), f"chart-{number}-1"),
        ]
        parts.append(_every_row(split.rows))
    for number, route in enumerate(routes):
        parts += [
            f"<h1>{html.escape(route.task)} · {html.escape(route.model)}</h1>",
            f"<p>Held-out prompts {html.escape(route.fingerprint)}: {html.escape(route.status)}</p>",
            route.display().to_html(index=False, escape=True),
            chart(route.frontier(), f"chart-rlhf-{number}"),
            _every_row([r for r in rows if r.test_fingerprint == route.fingerprint and r.kind == "rlhf"]),
        ]
    parts.append("</body></html>")
    return "\n".join(parts)


def _every_row(rows: Sequence[ResultRow]) -> str:
    """Every stored row of a section with its settings, as JSON lines."""
    return (
        "<h2>Every row</h2><pre>"
        + html.escape(
            "\n".join(
                json.dumps(
                    {
                        "id": r.id,
                        "method": r.method,
                        "K": r.k,
                        "seed": r.seed,
                        "accuracy": r.accuracy,
                        "metrics": r.metrics,
                        "settings": r.settings,
                        "created": r.created,
                        "version": r.version,
                    },
                    sort_keys=True,
                    default=str,
                )
                for r in rows
            )
        )
        + "</pre>"
    )
