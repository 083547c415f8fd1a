"""Stored RLHF evaluations (`evaluation.PolicyComparison.result_rows`) read back as a comparison of routes, which
the Compare tab and the report show. Apart from `evaluation`, which needs torch: the report starts without it."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from peftlab.errors import PeftlabError
from peftlab.store import ROUTE_FIGURES, ResultRow

REFERENCE = "sft"  # the policy every route starts from and is measured against


def stored_routes(rows: Sequence[ResultRow]) -> tuple[pd.DataFrame, dict]:
    """Stored RLHF evaluations (`result_rows`, all on the same held-out prompts) as one line per method: its runs,
    the labeler's mean score with its std over runs, the SFT model's score on the same prompts and the gain over
    it, the reward model's score, the KL to SFT (nats per response) and the training seconds; and the summary
    `plots.score_kl_frontier` draws (each method as a route).

    Raises:
        PeftlabError: a row without the figures `result_rows` writes (an edited import, say), named by its id.
    """
    runs: dict[str, list[dict]] = {}
    for row in rows:
        metrics = row.metrics
        route = _route_of(metrics)
        needed = {f"{route}_mean_score", f"{REFERENCE}_mean_score", "labeler", "prompts"}
        if route is None or not needed <= set(metrics):
            raise PeftlabError(
                f"The stored RLHF result {row.id[:8]} lacks its scores or KL; delete it under Stored results."
            )
        runs.setdefault(row.method, []).append(
            {
                "score": metrics[f"{route}_mean_score"],
                "sft_score": metrics[f"{REFERENCE}_mean_score"],
                "reward": metrics.get(f"{route}_mean_reward", float("nan")),
                "kl": metrics[f"{route}_mean_kl"],
                "seconds": row.train_seconds,
            }
        )
    lines = []
    for method, values in runs.items():
        frame = pd.DataFrame(values)
        lines.append(
            {
                "method": method,
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
    table = pd.DataFrame(lines)
    summary = {f"{REFERENCE}_mean_score": float(table["sft_score"].mean())}
    for line in lines:
        summary |= {f"{line['method']}_mean_score": line["score_mean"], f"{line['method']}_mean_kl": line["kl"]}
    return table, summary


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
