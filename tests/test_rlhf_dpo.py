"""DPO on the tiny Llama: TRL's loss against Eq. 7 by hand, a reference that never moves, a learnt preference, Stop."""

from __future__ import annotations

import copy
import math
import threading

import pytest
import torch

from peftlab.errors import PeftlabError
from peftlab.rlhf import dpo
from peftlab.rlhf.data import Comparison
from peftlab.rlhf.dpo import DPOConfig, DPOEvent, DPOResult, train_dpo
from peftlab.rlhf.generation import encode_pairs, encode_prompts, format_prompts, response_forward
from peftlab.rlhf.sft import lora_config
from tests.test_rlhf_stages import BAD, GOOD, PROMPTS, run


def sequence_log_probs(model, tokenizer, prompt: str, responses: list[str]) -> torch.Tensor:
    """log π(y|x) of each response: the sum over its tokens, end-of-response included (fp32, no autocast)."""
    batch = encode_pairs(tokenizer, [prompt] * len(responses), responses)
    with torch.no_grad():
        return (response_forward(model, batch).float() * batch.response_mask).sum(1)


def trl_sequence_log_prob(model, tokenizer, prompt: str, response: str) -> float:
    """log π(y|x) on the tokens TRL reads: prompt and response tokenized together, with the tokenizer's own special
    tokens (a BOS for the tiny tokenizer; none for SmolLM2, whose sequences are then the other stages' exactly)."""
    context = format_prompts(tokenizer, [prompt])[0]
    ids = tokenizer(context + response + tokenizer.eos_token).input_ids
    start = len(tokenizer(context).input_ids)
    with torch.no_grad():
        log_probs = model(torch.tensor([ids])).logits[0].float().log_softmax(-1)  # (T, V)
    return sum(float(log_probs[t - 1, ids[t]]) for t in range(start, len(ids)))


def preference_pairs(prompts) -> list[Comparison]:
    return [Comparison(p, g, b) for p in prompts for g, b in zip(GOOD, BAD)]


def test_trl_s_loss_is_eq_7_by_hand_against_the_sft_model_as_reference(tiny_causal, monkeypatch):
    """A LoRA adapter that starts away from zero makes π_θ differ from π_ref at the first step, whose logged loss is
    −log σ(β [(log π_θ(y_w) − log π_ref(y_w)) − (log π_θ(y_l) − log π_ref(y_l))]), π_ref the SFT model by hand."""

    def random_lora(r, model):
        config = lora_config(r, model)
        config.init_lora_weights = False  # B random too: π_θ != π_ref from the start
        return config

    monkeypatch.setattr(dpo, "lora_config", random_lora)
    monkeypatch.setattr(dpo, "autocast_dtype", lambda parameter: None)  # fp32, to compare closely
    pair = Comparison(PROMPTS[0], GOOD[0], BAD[0])
    config = DPOConfig(steps=1, batch_size=1, beta=0.5, lora_r=2, seed=3)
    (event,), result = run(train_dpo(tiny_causal.model, tiny_causal.tokenizer, [pair], config))
    ref_chosen, ref_rejected = (
        trl_sequence_log_prob(tiny_causal.model, tiny_causal.tokenizer, pair.prompt, r)
        for r in (pair.chosen, pair.rejected)
    )
    margin = config.beta * ((event.chosen_log_prob - ref_chosen) - (event.rejected_log_prob - ref_rejected))
    assert abs(margin) > 0.1  # the pair is not at the trivial point σ(0)
    assert event.reward_margin == pytest.approx(margin, abs=1e-3)
    assert event.loss == pytest.approx(-math.log(1 / (1 + math.exp(-margin))), abs=1e-3)
    assert isinstance(result, DPOResult) and result.history == [event]


@pytest.fixture(scope="module")
def trained(tiny_causal):
    before = [p.detach().clone() for p in tiny_causal.model.parameters()]
    config = DPOConfig(steps=30, batch_size=4, learning_rate=1e-2, beta=0.1, lora_r=4)
    steps, result = run(train_dpo(tiny_causal.model, tiny_causal.tokenizer, preference_pairs(PROMPTS[:6]), config))
    unchanged = all(torch.equal(p, w) for p, w in zip(tiny_causal.model.parameters(), before))
    return steps, result, unchanged


def test_dpo_learns_a_synthetic_preference_on_held_out_prompts(tiny_causal, trained):
    steps, result, _ = trained
    assert [e.step for e in steps] == list(range(1, 31)) and all(isinstance(e, DPOEvent) for e in steps)
    margins = {}
    for name, model in (("sft", tiny_causal.model), ("dpo", result.policy)):
        margins[name] = sum(
            float(
                (
                    sequence_log_probs(model, tiny_causal.tokenizer, p, GOOD)
                    - sequence_log_probs(model, tiny_causal.tokenizer, p, BAD)
                ).mean()
            )
            for p in PROMPTS[6:]
        )
    assert margins["dpo"] > margins["sft"] + 1.0  # log π(good) − log π(bad) grew on prompts it never saw
    assert steps[-1].reward_accuracy > 0.5 and not result.stopped


def test_the_sft_model_and_the_reference_never_move(tiny_causal, trained):
    _, result, unchanged = trained
    assert unchanged
    with result.policy.disable_adapter():  # TRL's reference: the adapter off
        reference = sequence_log_probs(result.policy, tiny_causal.tokenizer, PROMPTS[7], GOOD + BAD)
    sft = sequence_log_probs(tiny_causal.model, tiny_causal.tokenizer, PROMPTS[7], GOOD + BAD)
    assert torch.allclose(reference, sft, atol=1e-5)


def test_stop_ends_dpo_after_the_current_step_and_keeps_the_policy(tiny_causal):
    stop = threading.Event()
    events = []
    config = DPOConfig(steps=20, batch_size=2, lora_r=2)
    for item in train_dpo(tiny_causal.model, tiny_causal.tokenizer, preference_pairs(PROMPTS[:2]), config, stop):
        events.append(item)
        stop.set()
    *steps, result = events
    assert len(steps) < 20 and result.stopped and isinstance(result.policy, torch.nn.Module)


def test_dpo_counts_the_comparisons_it_trained_on(tiny_causal):
    """The RLHF tab said "DPO done (2 comparisons)" for a run that left one of them out as alike in what is read."""
    opening = " ".join(["The film opens slowly and the cast is large."] * 15)
    pairs = [*preference_pairs(PROMPTS[:1]), Comparison(PROMPTS[1], f"{opening} I loved it.", f"{opening} Awful.")]
    config = DPOConfig(steps=1, batch_size=1, lora_r=2)
    *_, result = train_dpo(tiny_causal.model, tiny_causal.tokenizer, pairs, config)
    assert result.comparisons == len(pairs) - 1


@pytest.mark.parametrize(
    ("comparisons", "message"),
    [
        ([], "DPO needs at least one comparison (a prompt, a chosen and a rejected response)."),
        (
            [Comparison("Review: a", "same", "same")],
            "A comparison for 'Review: a' has the same chosen and rejected response.",
        ),
    ],
)
def test_bad_comparisons_are_one_sentence(tiny_causal, comparisons, message):
    with pytest.raises(PeftlabError) as error:
        next(train_dpo(tiny_causal.model, tiny_causal.tokenizer, comparisons, DPOConfig()))
    assert str(error.value) == message


def test_dpo_reads_a_long_comparison_as_the_reward_model_does(tiny_causal, monkeypatch):
    """DPO read whole prompts and responses where the reward model reads a prompt's last 256 tokens and a response's
    first 63: a 5,000-word comparison took minutes a step, and the routes learnt from different texts. A pair alike in
    what is read is left out (it gives DPO's loss no gradient); none left is one sentence."""
    tokenizer = tiny_causal.tokenizer
    opening = " ".join(["The film opens slowly and the cast is large."] * 15)
    pairs = [
        Comparison(" ".join(["Tell me about the film."] * 80), f"{opening} I loved it.", "I hated it."),
        Comparison(PROMPTS[0], f"{opening} I loved it.", f"{opening} I hated it."),
    ]
    seen = []

    def record(model, tokenizer, rows, batch_size):
        seen.extend(rows)
        raise PeftlabError("recorded")

    monkeypatch.setattr(dpo, "check_batch_fits", record)
    with pytest.raises(PeftlabError, match="^recorded$"):
        next(train_dpo(tiny_causal.model, tokenizer, pairs, DPOConfig()))
    (row,) = seen  # the second pair is alike in its first 63 response tokens
    for side in ("chosen", "rejected"):
        batch = encode_pairs(tokenizer, [pairs[0].prompt], [getattr(pairs[0], side)])
        read = batch.input_ids[0][batch.attention_mask[0].bool()].tolist()
        assert tokenizer(row["prompt"] + row[side]).input_ids == read  # as TRL tokenizes: special tokens added
    assert batch.attention_mask[0, : batch.prompt_width].sum() == 256  # the long prompt's end, its BOS in front
    with pytest.raises(PeftlabError) as error:
        next(train_dpo(tiny_causal.model, tokenizer, pairs[1:], DPOConfig()))
    assert str(error.value) == (
        "Every comparison's responses differ only after their first 63 tokens, all DPO reads; let the responses "
        "differ earlier."
    )


def test_a_cut_inside_a_character_is_moved_to_the_character_before(tiny_causal):
    """A cut in the middle of a character's bytes decoded to U+FFFD, which TRL read as other tokens than the reward
    model's (74 for 73 on a Japanese response)."""
    from peftlab.rlhf.generation import read_texts

    tokenizer = tiny_causal.tokenizer
    texts = ["日本語のレビューです。" * 20, "映画はとても良かった。" * 30]
    for prompt in texts:
        for response in texts:
            (prompt_text,), (response_text,) = read_texts(tokenizer, [prompt], [response])
            assert "\ufffd" not in prompt_text + response_text
            read = tokenizer(response, add_special_tokens=False).input_ids[:63]
            again = tokenizer(response_text, add_special_tokens=False).input_ids
            assert 60 <= len(again) <= 63 and again == read[: len(again)]


def test_a_dpo_loss_that_turns_nan_stops_dpo_with_one_sentence(tiny_causal):
    # a learning rate no adapter survives: its weights overflow in the first update and the next loss is NaN
    config = DPOConfig(steps=6, batch_size=2, lora_r=2, learning_rate=1e30)
    steps = []
    with pytest.raises(PeftlabError, match=r"^The training loss became NaN at DPO step \d of 6, .*\(1e\+30 now\)"):
        for item in train_dpo(tiny_causal.model, tiny_causal.tokenizer, preference_pairs(PROMPTS[:2]), config):
            steps.append(item)
    assert steps and all(math.isfinite(step.loss) for step in steps)  # every step shown had a finite loss


def read_by_every_stage(tokenizer, prompts, **options) -> list[list[int]]:
    """The prompts' tokens as SFT, the reward model, PPO and the evaluation read them (`encode_prompts`), unpadded."""
    input_ids, attention_mask = encode_prompts(tokenizer, prompts, **options)
    return [ids[mask.bool()].tolist() for ids, mask in zip(input_ids, attention_mask)]


def read_by_trl(tokenizer, prompts) -> list[list[int]]:
    """The same prompts' tokens as TRL's DPO trainer reads them: tokenized with the tokenizer's special tokens."""
    return [tokenizer(text).input_ids for text in format_prompts(tokenizer, prompts)]


def test_dpo_reads_one_bos_where_the_template_and_the_tokenizer_each_add_one(tiny_causal):
    """Llama 3's chat template writes a BOS and its tokenizer adds one; TRL tokenizes with special tokens, so DPO read
    two where SFT, PPO and the evaluation (`add_special_tokens=False`) read one."""
    tokenizer = copy.deepcopy(tiny_causal.tokenizer)  # adds a BOS, as Llama's does
    tokenizer.chat_template = "{{ bos_token }}{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
    assert read_by_trl(tokenizer, PROMPTS[:3]) == read_by_every_stage(tokenizer, PROMPTS[:3])
    assert all(ids.count(tokenizer.bos_token_id) == 1 for ids in read_by_trl(tokenizer, PROMPTS[:3]))


def test_every_stage_reads_the_tokenizers_bos_on_a_model_without_a_chat_template(tiny_causal):
    """The tiny tokenizer adds a BOS, as Llama 2's does, and has no chat template: DPO (TRL, with special tokens) read
    one that SFT, the reward model, PPO and the evaluation (`add_special_tokens=False`) did not. A prompt longer than
    the stages keep loses its beginning, not its BOS."""
    tokenizer = tiny_causal.tokenizer
    read = read_by_every_stage(tokenizer, PROMPTS[:3])
    assert read == read_by_trl(tokenizer, PROMPTS[:3])
    assert all(ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1 for ids in read)
    (kept,) = read_by_every_stage(tokenizer, [" ".join(["the film was good"] * 20)], max_prompt_tokens=8)
    assert len(kept) == 8 and kept[0] == tokenizer.bos_token_id
    assert kept[1:] == tokenizer(" ".join(["the film was good"] * 20) + "\n", add_special_tokens=False).input_ids[-7:]


def test_a_sentencepiece_tokenizer_reads_the_first_word_alike_in_every_stage():
    """A SentencePiece tokenizer marks the first word of a text ('▁Hello'), but not a word after a BOS joined as text:
    "<s>Hello" read as '<s>', 'Hello' in SFT, PPO and the evaluation, and as '<s>', '▁Hello' in DPO."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "<pad>": 3, "▁Hello\n": 4, "Hello\n": 5}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    assert read_by_every_stage(tokenizer, ["Hello"]) == read_by_trl(tokenizer, ["Hello"]) == [[1, 4]]
    tokenizer.chat_template = (  # a BOS written by the template, as Mistral's is; the user's turn alone
        "{{ bos_token }}{% for m in messages if m['role'] == 'user' %}{{ m['content'] }}\n{% endfor %}"
    )
    assert read_by_every_stage(tokenizer, ["Hello"]) == read_by_trl(tokenizer, ["Hello"]) == [[1, 4]]
