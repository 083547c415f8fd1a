"""Running cloze queries through a model fast: the summed log-probability of each target's tokens at its query's
read positions (`score_queries`), and of every label word for a batch of items (`word_scores`).

A query (`prompts.Query`) is one input, the positions where the model's next-token distributions are read, and the
tokens each label word asks for there. The verbalizer's view of these scores (a label's words aggregated,
normalised over the labels, calibrated) is `peftlab.cloze`'s.

Speed: `cloze.score_query_lists` sorts the items by length and batches them, with no gradient kept; a causal LM is
left-padded so every read position sits at the end and only those logits are computed (`logits_to_keep`). The tokens
every query of a causal LM starts with (in-context demonstrations, the template's start) run through the model once,
and each batch reads their keys and values from that cache (`SharedPrefix`): with 2 demonstrations per class
that scores 3 to 6 times faster, with the same numbers to 1e-5. A text whose label words need a query each (a word
followed by more of the template, or split into pieces other words lack) runs its start once, and each query only its
own tokens after it (`ItemStarts`): PET's patterns of 2 and 5 queries a text score 1.8 and 4.1 times as fast in fp32.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from peftlab.models import LM
from peftlab.prompts import Query

# Shorter shared starts (a template's first words) save less than copying their cache into every batch costs.
MIN_SHARED_PREFIX = 32
# A query run after its item's start (`ItemStarts`) reads the start's keys and values, copied to it: each start token
# costs it about this share of a token run through the model. Measured on a 2-core CPU, the embedded model under bf16
# autocast, from the seconds of the start and rest passes: 0.084 with bbc-topic's patterns of 5 queries, 0.071 with
# rt-sentiment's of 2.
CACHED_TOKEN_COST = 0.08


@dataclass
class PaddedBatch:
    """Queries padded into one tensor batch; `shift[b]` maps a query position p to column p + shift[b]."""

    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T)
    position_ids: torch.Tensor  # (B, T)
    shift: list[int]
    causal: bool

    @classmethod
    def build(cls, queries: Sequence[Query], kind: str, pad_id: int) -> PaddedBatch:
        """Causal LMs are left-padded (every read position sits at the end), masked LMs right-padded."""
        lengths = [len(q.input_ids) for q in queries]
        width = max(lengths)
        input_ids = torch.full((len(queries), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(queries), width), dtype=torch.long)
        shift = [width - n if kind == "causal" else 0 for n in lengths]
        for row, (q, offset) in enumerate(zip(queries, shift)):
            input_ids[row, offset : offset + len(q.input_ids)] = torch.tensor(q.input_ids)
            attention_mask[row, offset : offset + len(q.input_ids)] = 1
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        return cls(input_ids, attention_mask, position_ids, shift, kind == "causal")

    def inputs(self, device: torch.device) -> dict:
        """The model's inputs on `device`: a causal LM's with the positions its left padding needs."""
        inputs = dict(input_ids=self.input_ids.to(device), attention_mask=self.attention_mask.to(device))
        return inputs | dict(position_ids=self.position_ids.to(device)) if self.causal else inputs


@dataclass
class Past:
    """Keys and values a batch of queries continues from (a transformers Cache, one row per query), their attention
    mask (B, P) (0 on padding) and the positions they take, per query (B,)."""

    cache: object
    mask: torch.Tensor
    lengths: torch.Tensor

    def continued(self, inputs: dict) -> dict:
        """The model inputs of the queries' own tokens, read after these keys and values."""
        return inputs | dict(
            attention_mask=torch.cat([self.mask, inputs["attention_mask"]], dim=1),
            position_ids=inputs["position_ids"] + self.lengths[:, None],
            past_key_values=self.cache,
        )


def continues_a_cache(model, kind: str) -> bool:
    """Whether queries may run after cached keys and values of their start: a causal LM, bare or under a PEFT method
    that is not prompt learning (virtual tokens and prefixes come before the input, so a cache of the input's start
    would miss them), no other wrapper (`methods.VirtualTokenForward`), and full attention in every layer, as its
    config says (`_full_attention_cache` checks the cache it returns)."""
    from transformers import PreTrainedModel

    peft_config = getattr(model, "active_peft_config", None)  # a PeftModel's
    plain = isinstance(model, PreTrainedModel) or (peft_config is not None and not peft_config.is_prompt_learning)
    layer_types = getattr(getattr(model, "config", None), "layer_types", None) or ()
    return kind == "causal" and plain and all(layer == "full_attention" for layer in layer_types)


def _full_attention_cache(output) -> object | None:
    """The keys and values a forward pass returned, when every layer's are a full-attention layer's whole sequence; else
    None. A sliding-window layer (Gemma 2 and 3, Mistral) keeps only its window's, and reads the window by column, so
    the padding between a start and a query's rest would hide its edge; a linear-attention or state-space layer (Mamba,
    Jamba, Qwen3-Next) carries a state that padding in the middle would change, and Mamba returns no keys at all."""
    from transformers.cache_utils import DynamicLayer

    cache = getattr(output, "past_key_values", None)
    layers = getattr(cache, "layers", None)
    return cache if layers and all(type(layer) is DynamicLayer for layer in layers) else None


@dataclass
class SharedPrefix:
    """The first tokens (`ids`) of a causal LM's queries, run through the model once (their keys and values in
    `cache`): a batch of queries that all start with them runs only the rest of each query.

    The in-context demonstrations of a prompt come before every input, so they are the same tokens for every
    text; computing them once is the KV-cache reuse every causal LM allows (positions and attention are those
    of the whole query).
    """

    ids: list[int]
    cache: object  # a transformers Cache, batch 1

    @classmethod
    def find(cls, model, kind: str, queries: Sequence[Query]) -> SharedPrefix | None:
        """The start the queries share, when it is at least MIN_SHARED_PREFIX tokens and the model may reuse it
        (`continues_a_cache`, `_full_attention_cache`).

        Queries whose start differs (demonstrations cut to fit a long input lose their first tokens) do not lower
        it: they are scored whole. A start is shared only before every read position, so each read logit is
        still computed in the batch.
        """
        if not queries or not continues_a_cache(model, kind):
            return None
        reference = min(queries, key=lambda q: len(q.input_ids)).input_ids
        shared = [n for n in (_shared_length(reference, q) for q in queries) if n >= MIN_SHARED_PREFIX]
        if not shared:
            return None
        ids = reference[: min(shared)]
        device = next(model.parameters()).device
        cache = _full_attention_cache(model(input_ids=torch.tensor([ids], device=device), use_cache=True))
        return cls(ids, cache) if cache is not None else None

    def starts(self, query: Query) -> bool:
        return _shared_length(self.ids, query) == len(self.ids)

    def past(self, batch_size: int, device: torch.device) -> Past:
        """The cache repeated for a batch (a copy: the forward pass appends each batch's own keys to it)."""
        cache = copy.deepcopy(self.cache)
        cache.batch_repeat_interleave(batch_size)
        return Past(
            cache,
            torch.ones((batch_size, len(self.ids)), dtype=torch.long, device=device),
            torch.full((batch_size,), len(self.ids), device=device),
        )


@dataclass
class ItemStarts:
    """Each item's start, run once for all its queries: a causal LM reads a label word that is followed by more of
    the template ("{text} It was{mask}.") or split into pieces some words do not share in a query of its own, the
    whole text again in each; those queries differ only from the word on (PET's bbc-topic patterns read 5 a text, each
    the whole text where the word and the rest are 2 or 3 tokens).

    `ids[i]` is item i's start (after the SharedPrefix's tokens when one is used), `owners[j]` the item of query j.
    Its keys and values are copied to each query (`past`), which runs only its own tokens. In fp32 on a 2-core CPU
    (`benchmarks/cloze_throughput.py`, 128 texts) rt-sentiment's pattern of 2 queries a text scored 1.8 times as fast
    and bbc-topic's of 5 4.1 times, to 1.6e-5; under bf16 autocast, as trained models score, about 1.5 and 2 times
    (each query's logits over the vocabulary and its copy of the start's keys weigh more there). PET's seeds ran 1.4
    (rt-sentiment) and 1.8 (bbc-topic) times as fast (`benchmarks/standard_comparison.py`'s notes).
    """

    ids: list[list[int]]
    owners: list[int]
    skip: int  # the SharedPrefix's tokens before every start, 0 without one

    @classmethod
    def find(cls, model, kind: str, query_lists: Sequence[Sequence[Query]], skip: int = 0) -> ItemStarts | None:
        """Each item's shared start past its first `skip` tokens (a SharedPrefix's), when some item has two queries
        or more, every item has a start and the model may reuse a cache (`continues_a_cache`); else None."""
        if all(len(queries) < 2 for queries in query_lists) or not continues_a_cache(model, kind):
            return None
        ids = []
        for queries in query_lists:
            shared = _start_length(queries)
            if shared <= skip:
                return None
            ids.append(queries[0].input_ids[skip:shared])
        return cls(ids, [item for item, queries in enumerate(query_lists) for _ in queries], skip)

    def rests(self, queries: Sequence[Query]) -> list[Query]:
        """The queries (flat, in their items' order) without the tokens before their own."""
        return [_after(q, self.skip + len(self.ids[owner])) for q, owner in zip(queries, self.owners)]

    def past(self, model, pad_id: int, prefix: SharedPrefix | None) -> Past | None:
        """The starts run in one batch (after the prefix's keys and values, when given), each copied to its queries;
        None when the model returns no full-attention cache (`_full_attention_cache`)."""
        device = next(model.parameters()).device
        inputs = PaddedBatch.build([Query(ids, []) for ids in self.ids], "causal", pad_id).inputs(device)
        if prefix is not None:
            inputs = prefix.past(len(self.ids), device).continued(inputs)
        cache = _full_attention_cache(model(**inputs, use_cache=True, logits_to_keep=1))
        if cache is None:
            return None
        owners = torch.tensor(self.owners, device=device)
        cache.batch_select_indices(owners)
        mask = inputs["attention_mask"][owners]
        return Past(cache, mask, mask.sum(-1))


def padded_tokens(query_lists: Sequence[Sequence[Query]], shares_starts: bool = True) -> float:
    """The tokens scoring the items `query_lists` in one batch costs, padded as the batch pads: every query whole,
    padded to the longest; or, where some item has several queries and the model's cache can be continued
    (`ItemStarts`), the items' starts padded to the longest start and the queries' rests to the longest rest, each rest
    also reading its start's keys and values (CACHED_TOKEN_COST a token)."""
    queries = [q for item in query_lists for q in item]
    if not shares_starts or all(len(item) < 2 for item in query_lists):
        return len(queries) * max(len(q.input_ids) for q in queries)
    starts = [_start_length(item) for item in query_lists]
    rest = max(len(q.input_ids) - start for item, start in zip(query_lists, starts) for q in item)
    return len(query_lists) * max(starts) + len(queries) * (rest + CACHED_TOKEN_COST * max(starts))


def item_tokens(queries: Sequence[Query], shares_starts: bool = True) -> float:
    """The tokens scoring one item's `queries` costs in a length-sorted batch, which pads little (`padded_tokens`)."""
    return padded_tokens([queries], shares_starts)


def _start_length(queries: Sequence[Query]) -> int:
    """The tokens an item's queries share before every read position (`ItemStarts` runs them once)."""
    return min(_shared_length(queries[0].input_ids, q) for q in queries)


def _after(query: Query, n: int) -> Query:
    """The query without its first `n` tokens, its read positions moved to match (its trigger ids are inputs)."""
    return Query(query.input_ids[n:], [p - n for p in query.read_positions], query.targets)


def _shared_length(ids: Sequence[int], query: Query) -> int:
    """How many first tokens `query` has in common with `ids`, never past its first read position."""
    limit = min(len(ids), query.read_positions[0])
    n = 0
    while n < limit and ids[n] == query.input_ids[n]:
        n += 1
    return n


def score_queries(
    model,
    kind: str,
    queries: Sequence[Query],
    pad_id: int,
    trigger_embeds: torch.Tensor | None = None,
    prefix: SharedPrefix | None = None,
    starts: ItemStarts | None = None,
) -> torch.Tensor:
    """Sum of log-probabilities of every target in `queries`, in order: shape (total targets,).

    One forward pass over the whole list (callers batch it), after one over the items' starts when `starts` are given;
    differentiable when gradients are on.
    `trigger_embeds` (n_slots, H), when given, replaces the input embedding at each query's trigger
    positions (the model reads `inputs_embeds`), so the gradient with respect to the trigger tokens'
    embeddings lands on it (AutoPrompt). `prefix`, when given, is a start every query has (`SharedPrefix.starts`);
    `starts`, each item's start (`ItemStarts`, after the prefix): only the rest of each query runs, after their
    cached keys and values.
    """
    device = next(model.parameters()).device
    past = None
    if starts is not None:
        past = starts.past(model, pad_id, prefix)
        queries = queries if past is None else starts.rests(queries)
    elif prefix is not None:
        past = prefix.past(len(queries), device)
        queries = [_after(q, len(prefix.ids)) for q in queries]
    batch = PaddedBatch.build(queries, kind, pad_id)
    rows = [row for row, q in enumerate(queries) for _ in q.read_positions]
    columns = [p + batch.shift[row] for row, q in enumerate(queries) for p in q.read_positions]
    inputs = batch.inputs(device)
    if kind == "causal":
        keep = batch.input_ids.shape[1] - min(columns)  # logits only for the last `keep` positions
        inputs.update(logits_to_keep=keep)
        columns = [c - (batch.input_ids.shape[1] - keep) for c in columns]
    if past is not None:
        inputs = past.continued(inputs)
    if trigger_embeds is not None:  # the triggers' embeddings go in as inputs: the shared model is never hooked
        slot_rows = [row for row, q in enumerate(queries) for _ in q.trigger_positions]
        slot_columns = [p + batch.shift[row] for row, q in enumerate(queries) for p in q.trigger_positions]
        slots = [j for q in queries for j in range(len(q.trigger_positions))]
        embeds = model.get_input_embeddings()(inputs.pop("input_ids"))  # (B, T, H)
        embeds[slot_rows, slot_columns] = trigger_embeds[slots].to(embeds.dtype)
        inputs["inputs_embeds"] = embeds
    logits = model(**inputs).logits  # (B, keep or T, V)
    read_log_probs = logits[rows, columns].float().log_softmax(-1)  # (R, V), R = all read positions

    # Each target picks one token per read position of its query and sums their log-probabilities.
    read_offset = np.cumsum([0] + [len(q.read_positions) for q in queries])
    targets = [(qi, token_ids) for qi, q in enumerate(queries) for _, token_ids in q.targets]
    pick_rows, pick_tokens, pick_target = [], [], []
    for t, (qi, token_ids) in enumerate(targets):
        pick_rows.extend(range(read_offset[qi], read_offset[qi] + len(token_ids)))
        pick_tokens.extend(token_ids)
        pick_target.extend([t] * len(token_ids))
    picked = read_log_probs[torch.tensor(pick_rows, device=device), torch.tensor(pick_tokens, device=device)]
    target_of_pick = torch.tensor(pick_target, device=device)
    return torch.zeros(len(targets), device=device).index_add(0, target_of_pick, picked)


def word_scores(
    lm: LM,
    query_lists: Sequence[Sequence[Query]],
    n_words: int,
    model=None,
    trigger_embeds: torch.Tensor | None = None,
    prefix: SharedPrefix | None = None,
) -> torch.Tensor:
    """(N, W) log-probability of every label word for N items, each item a list of queries; one forward pass, or two
    where an item has several queries: its start, then each query's own tokens (`ItemStarts`).

    `prefix` is used when every query starts with it and no trigger embeddings replace inputs (see
    `score_queries`); so are the items' starts."""
    model = model if model is not None else lm.model
    flat = [(i, q) for i, queries in enumerate(query_lists) for q in queries]
    if prefix is not None and (trigger_embeds is not None or not all(prefix.starts(q) for _, q in flat)):
        prefix = None
    skip = len(prefix.ids) if prefix is not None else 0
    starts = None if trigger_embeds is not None else ItemStarts.find(model, lm.kind, query_lists, skip)
    pad_id = lm.tokenizer.pad_token_id
    scores = score_queries(model, lm.kind, [q for _, q in flat], pad_id, trigger_embeds, prefix, starts)
    item = torch.tensor([i for i, q in flat for _ in q.targets], device=scores.device)
    word = torch.tensor([w for _, q in flat for w, _ in q.targets], device=scores.device)
    empty = torch.full((len(query_lists), n_words), float("nan"), device=scores.device)
    return empty.index_put((item, word), scores)
