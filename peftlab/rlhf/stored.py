"""Stored RLHF evaluations (`evaluation.PolicyComparison.result_rows`) read back as a comparison of routes, which
the Compare tab and the report show. Apart from `evaluation`, which needs torch: the report starts without it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from peftlab.errors import PeftlabError
from peftlab.store import ROUTE_FIGURES, ResultRow

REFERENCE = "sft"  # the policy every route starts from and is measured against
# The pipeline's stages (`PipelineConfig`'s sub-configs) each stored route trained through
STAGES = ("sft", "reward", "ppo", "dpo")
ROUTE_STAGES = {"ppo": ("sft", "reward", "ppo"), "ppo-ptx": ("sft", "reward", "ppo"), "dpo": ("sft", "dpo")}


# Where a reward model's comparisons came from, stored as the setting "comparisons" (rows stored before it came from
# the simulated labeler or a file); named, since the tab's choices are these words in this order
SIMULATED, MINE, UPLOADED = "simulated labeler", "my rankings", "uploaded comparisons"
RANKING_SOURCES = (SIMULATED, MINE, UPLOADED)
# The pipeline's settings that make a simulated labeler's comparisons (`PipelineConfig`'s names)
RANKING_SETTINGS = ("labeler", "k", "rm_pairs", "rm_heldout_prompts", "max_new_tokens")


def route_settings(method: str, settings: dict) -> dict:
    """The settings that made a stored route: the pipeline's shared ones and its own stages' (the other route's, the
    route choice and the copy of PPO's γ at the top aside), and the ranking settings only where a simulated labeler
    made the comparisons (they do nothing to a person's or a file's). With all of them, PPO's line was split by DPO's
    beta and named 'ppo (beta 0.2)', and DPO's by PPO's γ."""
    own = ROUTE_STAGES.get(method, STAGES)
    simulated = settings.get("comparisons", SIMULATED) == SIMULATED
    return {
        k: v
        for k, v in settings.items()
        if k not in ("route", "ptx_coef") and (k not in STAGES or k in own) and (simulated or k not in RANKING_SETTINGS)
    }


def stored_routes(lines: Mapping[str, Sequence[ResultRow]]) -> tuple[pd.DataFrame, dict]:
    """Stored RLHF evaluations (`result_rows`, all on the same held-out prompts), grouped into lines (a name: its
    runs; `report.compare_routes` makes them), as one table line each: its runs, the labeler's mean score with its
    std over runs, the SFT model's score on the same prompts and the gain over it, the reward model's score, the KL
    to SFT (nats per response) and the training seconds; and the summary `plots.score_kl_frontier` draws (each line
    as a route).

    Raises:
        PeftlabError: a row without the figures `result_rows` writes (an edited import, say), named by its id.
    """
    records = []
    for name, rows in lines.items():
        frame = pd.DataFrame([_figures(row) for row in rows])
        records.append(
            {
                "method": name,
                "runs": len(frame),
                "score_mean": frame["score"].mean(),
                "score_std": frame["score"].std() if len(frame) > 1 else 0.0,
                "sft_score": frame["sft_score"].mean(),
                "gain": (frame["score"] - frame["sft_score"]).mean(),
                "reward": frame["reward"].mean(),
                "kl": frame["kl"].mean(),
                "seconds": frame["seconds"].mean(),
            }
        )
    table = pd.DataFrame(records)
    summary = {f"{REFERENCE}_mean_score": float(table["sft_score"].mean())}
    for line in records:
        summary |= {f"{line['method']}_mean_score": line["score_mean"], f"{line['method']}_mean_kl": line["kl"]}
    return table, summary


def _figures(row: ResultRow) -> dict:
    """One stored evaluation's figures of its route.

    Raises:
        PeftlabError: the row lacks them.
    """
    metrics = row.metrics
    if missing := missing_figures(metrics):
        raise PeftlabError(
            f"The stored RLHF result {row.id[:8]} lacks {missing}; delete it (`results delete {row.id[:8]}`, or "
            "under Stored results in the Compare tab)."
        )
    route = _route_of(metrics)
    return {
        "score": metrics[f"{route}_mean_score"],
        "sft_score": metrics[f"{REFERENCE}_mean_score"],
        "reward": metrics.get(f"{route}_mean_reward", float("nan")),
        "kl": metrics[f"{route}_mean_kl"],
        "seconds": row.train_seconds,
    }


def missing_figures(metrics: dict) -> str:
    """What of the figures `stored_routes` reads a stored evaluation's metrics lack, in words ("" when none): its
    route's score and KL, the SFT model's score, the labeler and how many held-out prompts (a whole number from 1)."""
    route = _route_of(metrics)
    if route is None:
        return "a route's KL (as 'ppo_mean_kl')"
    needed = [f"{route}_mean_score", f"{REFERENCE}_mean_score", "labeler", "prompts"]
    if absent := [name for name in needed if name not in metrics]:
        return ", ".join(absent)
    prompts = metrics["prompts"]
    if not (isinstance(prompts, int) and not isinstance(prompts, bool) and prompts >= 1):
        return f"a count of prompts (it has {prompts!r})"  # -3 read "on the same -3 held-out prompts"
    return ""


def route_score(metrics: dict) -> float | None:
    """The labeler's mean score of the route a stored RLHF row holds (`result_rows`' metrics), None without one: what
    a list of results shows where a classification row shows its accuracy."""
    route = _route_of(metrics)
    return metrics.get(f"{route}_mean_score") if route else None


def _route_of(metrics: dict) -> str | None:
    return next((route_key(k) for k in metrics if k.endswith("_mean_kl")), None)


def route_key(key: str) -> str | None:
    """The route a summary key belongs to ("ppo_mean_kl" -> "ppo"), None for shared keys."""
    for suffix in ROUTE_FIGURES:
        if key.endswith(suffix):
            return key[: -len(suffix)]
    return None
