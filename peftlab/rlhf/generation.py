"""Turning prompts into model inputs, sampling responses, and reading back their token log-probabilities.

Layout of a batch of (prompt, response) sequences, shared by SFT, the reward model and PPO:

    [pad pad p p p p | r r r r EOS pad pad]
     <- left-padded prompt, width P -> <- response, width R, right-padded ->

Every prompt ends at column P and every response starts there, so the logits that predict the
response are the last R + 1 positions (`logits_to_keep`), and PPO's reward for a response is given at its
last real token (the reward model reads all of the response's tokens: `reward.RewardModel`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from jinja2.exceptions import TemplateError
from transformers import GenerationConfig

from peftlab.errors import PeftlabError
from peftlab.models import autocast_for, capture_head_inputs, free_memory_bytes
from peftlab.rlhf.ppo_math import sampling_kl_problem
from peftlab.seeding import SeededTurns

SYSTEM_PROMPT = "You are a helpful assistant."


def format_prompts(tokenizer, prompts: Sequence[str]) -> list[str]:
    """The texts the policy continues: a chat turn each where the model has a chat template, else `prompt\\n`; without
    a leading BOS where the tokenizer puts its own in front (`adds_bos`), which every stage then adds as a token:
    `encode_prompts` by its id, DPO's TRL trainer by tokenizing with special tokens.

    Read with a BOS the tokenizer does not add itself, or with one joined as text, the stages disagreed: a model
    without a chat template had DPO read a BOS that SFT, the reward model, PPO and the evaluation never read, Llama 3's
    template and tokenizer each added one, and a SentencePiece tokenizer reads "<s>Hello" as '<s>', 'Hello' but
    "Hello" after its own BOS as '▁Hello'. The short system message replaces a template's default one where the
    template takes one (SmolLM2's default is 25 tokens, most of a review prompt: every stage reads the prompt, so it
    costs time everywhere).
    """
    if getattr(tokenizer, "chat_template", None):
        texts = [_chat_turn(tokenizer, prompt) for prompt in prompts]
    else:
        texts = [prompt + "\n" for prompt in prompts]
    return [text.removeprefix(tokenizer.bos_token) for text in texts] if adds_bos(tokenizer) else texts


def adds_bos(tokenizer) -> bool:
    """Whether the tokenizer puts its BOS token in front of a text it encodes with its special tokens (Llama's do)."""
    return tokenizer.bos_token is not None and tokenizer("x").input_ids[:1] == [tokenizer.bos_token_id]


def _chat_turn(tokenizer, prompt: str) -> str:
    user = [{"role": "user", "content": prompt}]
    try:
        return tokenizer.apply_chat_template(
            [{"role": "system", "content": SYSTEM_PROMPT}] + user, add_generation_prompt=True, tokenize=False
        )
    except TemplateError:  # a template without a system role
        return tokenizer.apply_chat_template(user, add_generation_prompt=True, tokenize=False)


def end_of_response(tokenizer) -> int:
    """The token that ends a response (the chat template's end-of-turn token is the EOS of chat models)."""
    if tokenizer.eos_token_id is None:
        raise PeftlabError("The tokenizer has no end-of-sequence token, so responses could never end.")
    return tokenizer.eos_token_id


@dataclass
class SequenceBatch:
    """Prompts and responses laid out as in the module docstring; tensors on the CPU."""

    input_ids: torch.Tensor  # (B, P + R)
    attention_mask: torch.Tensor  # (B, P + R): 0 on padding
    prompt_width: int  # P
    prompts: list[str]
    responses: list[str]

    @property
    def response_ids(self) -> torch.Tensor:  # (B, R)
        return self.input_ids[:, self.prompt_width :]

    @property
    def response_mask(self) -> torch.Tensor:  # (B, R): 1 on response tokens, EOS included
        return self.attention_mask[:, self.prompt_width :]

    @property
    def position_ids(self) -> torch.Tensor:  # (B, P + R)
        return (self.attention_mask.cumsum(-1) - 1).clamp(min=0)

    def select(self, rows: Sequence[int]) -> SequenceBatch:
        rows = list(rows)
        return SequenceBatch(
            self.input_ids[rows],
            self.attention_mask[rows],
            self.prompt_width,
            [self.prompts[i] for i in rows],
            [self.responses[i] for i in rows],
        )


MAX_PROMPT_TOKENS = 256  # a prompt's tokens every stage reads, its end kept (and a BOS the tokenizer adds)
PAIR_RESPONSE_TOKENS = 64  # a response's tokens `encode_pairs` keeps by default, its end token among them


def _kept_tokens(tokenizer, text: str, kept: int, keep_end: bool = False) -> tuple[list[int], bool]:
    """The text's tokens cut to `kept` (its last ones with keep_end, else its first), and whether any were cut."""
    ids = tokenizer(text, add_special_tokens=False).input_ids
    return (ids[-kept:] if keep_end else ids[:kept]), len(ids) > kept


def encode_prompts(
    tokenizer, prompts: Sequence[str], max_prompt_tokens: int = MAX_PROMPT_TOKENS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded (input_ids, attention_mask) of the formatted prompts; (B, P) each."""
    start = [tokenizer.bos_token_id] if adds_bos(tokenizer) else []  # kept when a long prompt loses its beginning
    kept = max_prompt_tokens - len(start)
    rows = [
        start + _kept_tokens(tokenizer, text, kept, keep_end=True)[0] for text in format_prompts(tokenizer, prompts)
    ]
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, width - len(row) :] = torch.tensor(row)
        attention_mask[i, width - len(row) :] = 1
    return input_ids, attention_mask


def encode_pairs(
    tokenizer,
    prompts: Sequence[str],
    responses: Sequence[str],
    max_response_tokens: int = PAIR_RESPONSE_TOKENS,
    close_cut: bool = True,
) -> SequenceBatch:
    """Given (prompt, response) texts as one batch; each response is cut to its first `max_response_tokens` - 1
    tokens and closed with the end-of-response token, a cut one only with `close_cut` (what a reward model reads
    marks its end; a target after a cut teaches the model to stop mid-sentence)."""
    prompt_ids, prompt_mask = encode_prompts(tokenizer, prompts)
    eos = end_of_response(tokenizer)
    rows = []
    for response in responses:
        kept, cut = _kept_tokens(tokenizer, response, max_response_tokens - 1)
        rows.append(kept + [eos] if close_cut or not cut else kept)
    width = max(len(r) for r in rows)
    response_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    response_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        response_ids[i, : len(row)] = torch.tensor(row)
        response_mask[i, : len(row)] = 1
    return SequenceBatch(
        torch.cat([prompt_ids, response_ids], 1),
        torch.cat([prompt_mask, response_mask], 1),
        prompt_ids.shape[1],
        list(prompts),
        list(responses),
    )


def read_texts(
    tokenizer,
    prompts: Sequence[str] = (),
    responses: Sequence[str] = (),
    max_response_tokens: int = PAIR_RESPONSE_TOKENS,
) -> tuple[list[str], list[str]]:
    """(formatted prompts, responses) as texts holding what `encode_pairs` reads of them, for a trainer that tokenises
    texts itself (TRL's DPOTrainer): each prompt's last MAX_PROMPT_TOKENS tokens (less the tokenizer's own BOS) and
    each response's first max_response_tokens - 1, without its end token. A text within its cut is kept as given; a
    cut one is its kept tokens decoded, less a character the cut splits (its bytes decode to U+FFFD, which is read as
    other tokens). DPO read whole responses where the reward model read 63 tokens: the two routes learnt from
    different texts, and a 5,000-word comparison took minutes a step."""

    def read(text: str, room: int, keep_end: bool = False) -> str:
        kept, cut = _kept_tokens(tokenizer, text, room, keep_end)
        if not cut:
            return text
        for _ in range(3):  # a UTF-8 character spans at most 4 bytes, so at most 3 tokens of it are left at a cut
            decoded = tokenizer.decode(kept)
            if not (decoded.startswith("\ufffd") if keep_end else decoded.endswith("\ufffd")):
                break
            kept = kept[1:] if keep_end else kept[:-1]
        return tokenizer.decode(kept)

    prompt_room = MAX_PROMPT_TOKENS - (1 if adds_bos(tokenizer) else 0)
    return (
        [read(prompt, prompt_room, keep_end=True) for prompt in format_prompts(tokenizer, prompts)],
        [read(response, max_response_tokens - 1) for response in responses],
    )


def read_alike(tokenizer, first: str, second: str, max_response_tokens: int = PAIR_RESPONSE_TOKENS) -> bool:
    """Whether two responses hold the same tokens in all that `encode_pairs` (and DPO, `read_texts`) read of them."""
    room = max_response_tokens - 1
    return _kept_tokens(tokenizer, first, room)[0] == _kept_tokens(tokenizer, second, room)[0]


# generate() fills every option its GenerationConfig leaves unset (None) from the model's own generation_config
# (transformers 5, `GenerationMixin._prepare_generation_config`), so a model shipping repetition_penalty,
# min_new_tokens, min_p or no_repeat_ngram_size would bend every sample away from the policy's distribution, and
# PPO's KL estimate with it. Each option that changes which token is drawn, or when a response may end, is set to
# the value that turns it off ...
NEUTRAL_OPTIONS = {
    "min_new_tokens": 0,  # wins over min_length, which is left unset (transformers warns at every call with both)
    "min_p": 0.0,
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0,
    "suppress_tokens": [],
    "begin_suppress_tokens": [],
    "guidance_scale": 1.0,
    "renormalize_logits": False,
    "remove_invalid_values": False,
    "token_healing": False,
    "num_beams": 1,
    "num_beam_groups": 1,
    "diversity_penalty": 0.0,
    "num_return_sequences": 1,
}
# ... the options below do not touch what is sampled, and those of OFF_WHEN_SHIPPED may come at their off value.
# Any other option the model's generation_config sets (bad_words_ids, sequence_bias, forced_eos_token_id, top_h,
# stop_strings, max_time, watermarking, ...: options with no "off" value, or unknown to this list) is refused
# rather than silently applied.
OFF_WHEN_SHIPPED = {"min_length": 0}
UNRELATED_OPTIONS = {
    "do_sample",  # always on here: the policy's samples are drawn, never decoded greedily
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "decoder_start_token_id",
    "forced_bos_token_id",  # only acts on the first token of an encoder-decoder's output
    "max_length",  # max_new_tokens wins
    "early_stopping",  # beam search only
    "length_penalty",  # beam search only
    "use_cache",
    "cache_implementation",
    "cache_config",
    "max_cache_len",
    "compile_config",
    "disable_compile",
    "prefill_chunk_size",
    "output_attentions",
    "output_hidden_states",
    "output_scores",
    "output_logits",
    "return_dict_in_generate",
    "transformers_version",
}


def sampling_config(model, **options) -> GenerationConfig:
    """A GenerationConfig that samples from the model's own distribution (softened only by the given `options`:
    temperature, top_k, top_p, lengths, token ids), whatever the model's generation_config ships.

    Raises:
        PeftlabError: the model's generation_config sets an option that changes sampling and has no "off" value.
    """
    shipped = getattr(model, "generation_config", None)
    # names starting with "_" are the config's own bookkeeping (_from_model_config, _commit_hash)
    shipped = {} if shipped is None else {k: v for k, v in shipped.to_dict().items() if v is not None and k[0] != "_"}
    for name, value in shipped.items():
        if OFF_WHEN_SHIPPED.get(name, object()) == value:
            continue
        if name not in NEUTRAL_OPTIONS and name not in UNRELATED_OPTIONS and name not in options:
            raise PeftlabError(
                f"The model's generation config sets {name}={value!r}, which changes how responses are sampled, so "
                f"they would not be the policy's own samples; remove {name} from its generation_config.json."
            )
    return GenerationConfig(do_sample=True, **(NEUTRAL_OPTIONS | options))


def counted_on(
    progress: Callable[[int, int], None] | None, before: int, total: int
) -> Callable[[int, int], None] | None:
    """`progress` for one of several samplings done in turn: `sample_responses` counts its own responses, and
    `progress` gets them counted on from the `before` sampled by the ones before it, of `total` in all."""
    return None if progress is None else lambda done, _: progress(before + done, total)


@torch.no_grad()
def sample_responses(
    model,
    tokenizer,
    prompts: Sequence[str],
    max_new_tokens: int = 32,
    seed: int = 0,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    batch_size: int = 32,
    for_ppo: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> SequenceBatch:
    """One sampled response per prompt (repeat a prompt for several), cut after the first end-of-response token.

    `for_ppo` refuses sampling settings that bias the per-token KL estimate (see `sampling_kl_problem`).
    `progress(done, total)` is called after each batch with the responses sampled so far; it may raise to stop.

    Raises:
        PeftlabError: sampling settings that bias PPO's KL (with `for_ppo`), no new tokens or more than the model's
            context holds after the longest prompt, or a model whose
            generation_config changes sampling in a way that cannot be turned off (`sampling_config`).
    """
    if for_ppo and (problem := sampling_kl_problem(temperature, top_k, top_p)):
        raise PeftlabError(problem)
    if max_new_tokens < 1:
        raise PeftlabError(f"Responses need at least 1 new token, not {max_new_tokens}.")
    eos = end_of_response(tokenizer)
    config = sampling_config(
        model,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        eos_token_id=eos,
        pad_token_id=tokenizer.pad_token_id,
    )
    device = next(model.parameters()).device
    context = getattr(model.config.get_text_config(), "max_position_embeddings", None)
    longest = encode_prompts(tokenizer, list(prompts))[0].shape[1] if context and prompts else 0
    if context and longest + max_new_tokens > context:
        raise PeftlabError(
            f"The longest response is {max_new_tokens} tokens; after a prompt of {longest} tokens the model reads at "
            f"most {context}, so use at most {max(context - longest, 1)}."
        )
    parts = []
    turns = SeededTurns(seed)  # generate() draws from torch's global generator: a batch a turn
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start : start + batch_size])
        input_ids, attention_mask = encode_prompts(tokenizer, chunk)
        with turns.take(), autocast_for(model):
            output = model.generate(
                input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), generation_config=config
            )
        responses = output[:, input_ids.shape[1] :].cpu()  # (b, R)
        parts.append((chunk, input_ids, attention_mask, responses))
        if progress is not None:
            progress(start + len(chunk), len(prompts))
    return _stack_samples(tokenizer, parts, eos)


def _stack_samples(tokenizer, parts, eos: int) -> SequenceBatch:
    """Sampled chunks -> one SequenceBatch: prompts re-padded to a common width, responses masked after EOS."""
    prompt_width = max(ids.shape[1] for _, ids, _, _ in parts)
    response_width = max(r.shape[1] for *_, r in parts)
    ids_rows, mask_rows, prompts, texts = [], [], [], []
    for chunk, input_ids, attention_mask, responses in parts:
        for i, prompt in enumerate(chunk):
            response = responses[i].tolist()
            ends = [j for j, token in enumerate(response) if token == eos]
            response = response[: ends[0] + 1] if ends else response
            prompt_ids = input_ids[i][attention_mask[i].bool()].tolist()
            ids = [tokenizer.pad_token_id] * (prompt_width - len(prompt_ids)) + prompt_ids + response
            ids += [tokenizer.pad_token_id] * (prompt_width + response_width - len(ids))
            mask = [0] * (prompt_width - len(prompt_ids)) + [1] * (len(prompt_ids) + len(response))
            mask += [0] * (prompt_width + response_width - len(mask))
            ids_rows.append(ids)
            mask_rows.append(mask)
            prompts.append(prompt)
            texts.append(tokenizer.decode([t for t in response if t != eos], skip_special_tokens=True).strip())
    return SequenceBatch(torch.tensor(ids_rows), torch.tensor(mask_rows), prompt_width, prompts, texts)


LOGIT_COPIES = 3  # a forward pass holds the logits, their fp32 copy and its log-softmax (or its gradient) at once


def check_word_scores_fit(model, rows: int, positions: int, what: str, lower: str) -> None:
    """Refuse a forward pass whose word scores, (rows, positions, vocabulary) fp32 values held LOGIT_COPIES times,
    would not fit in the memory free on the model's device: it would stop the process (every visitor's work on a
    Space). `what` names the pass with its size ("A PPO batch of 16 responses of up to 24 tokens"), `lower` the
    settings that shrink it.

    Raises:
        PeftlabError: the scores larger than the free memory, with what to lower.
    """
    vocabulary = model.get_output_embeddings().weight.shape[0]
    needed = LOGIT_COPIES * rows * positions * vocabulary * 4
    free = free_memory_bytes(next(model.parameters()).device)
    if needed > free:
        raise PeftlabError(
            f"{what} needs about {_readable(needed)} for the model's word scores ({vocabulary} per token), "
            f"more than the {_readable(free)} free here; lower {lower}."
        )


def _readable(size: int) -> str:
    """Bytes as people read them: '1.5 GB', or '12 MB' below a GB (GB and MB of 2^30 and 2^20 bytes)."""
    return f"{size / 2**30:,.1f} GB" if size >= 2**30 else f"{size / 2**20:,.0f} MB"


def check_response_scores_fit(model, responses: int, new_tokens: int, what: str, lower: str) -> None:
    """`check_word_scores_fit` for `response_forward` over `responses` sampled responses of up to `new_tokens`
    tokens (it keeps new_tokens + 1 positions); `what` names the pass ("A PPO batch").

    Raises:
        PeftlabError: the scores larger than the free memory, with what to lower.
    """
    what = f"{what} of {responses} responses of up to {new_tokens} tokens"
    check_word_scores_fit(model, responses, new_tokens + 1, what, lower)


def response_forward(model, batch: SequenceBatch, with_hidden: bool = False):
    """Log-probabilities of the response tokens (B, R) and, optionally, the hidden states that predicted them (B, R, H).

    Position t of the result belongs to response token t: it is read from the logits (and the last hidden
    state, the LM head's input) at the position before it. Differentiable when gradients are on.
    """
    device = next(model.parameters()).device
    width = batch.response_ids.shape[1]
    capture = capture_head_inputs(model) if with_hidden else contextlib.nullcontext([])
    with autocast_for(model), capture as captured:
        logits = model(
            input_ids=batch.input_ids.to(device),
            attention_mask=batch.attention_mask.to(device),
            position_ids=batch.position_ids.to(device),
            logits_to_keep=width + 1,
        ).logits[:, :-1]  # (B, R, V): position P-1+t predicts response token t
    log_probs = logits.float().log_softmax(-1).gather(-1, batch.response_ids.to(device).unsqueeze(-1)).squeeze(-1)
    if not with_hidden:
        return log_probs  # (B, R)
    return log_probs, captured[-1][:, :-1].float()  # (B, R), (B, R, H)
