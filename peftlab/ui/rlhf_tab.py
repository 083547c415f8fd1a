"""The RLHF tab: SFT -> reward model -> PPO in three steps, a screen where a person ranks samples, and SFT vs PPO.

A session's models and rankings live in its `Session.values["rlhf"]` dict: "lm", "data", "sft", "reward",
"ppo", "human" (HumanRankings) and "pending" (the prompt and responses shown for ranking); they go when
the visitor leaves. Each stage needs the one before; each has a stop flag that ends it after its current
step and keeps what it trained.
"""

from __future__ import annotations

import random
from dataclasses import asdict, replace

import gradio as gr
import pandas as pd

from peftlab.errors import PeftlabError
from peftlab.plots import metric_curve, metric_panels, score_comparison
from peftlab.rlhf.evaluation import compare_policies
from peftlab.rlhf.generation import sample_responses
from peftlab.rlhf.labelers import LABELERS, HumanRankings, labeler_by_name
from peftlab.rlhf.pipeline import PipelineConfig, RLHFData, ranked_comparisons
from peftlab.rlhf.ppo import PPOConfig, PPOResult, train_ppo
from peftlab.rlhf.reward import RewardConfig, RewardResult, train_reward_model
from peftlab.rlhf.sft import SFT_METHODS, SFTConfig, SFTResult, train_sft
from peftlab.saving import zip_saved
from peftlab.serving import current_caps
from peftlab.ui.common import (
    INSTANT, capped_number, heavy, job, light, load_model, model_picker, stop_handler, stopped_note, upload_limit_note,
    user_errors,
)
from peftlab.ui.sessions import SESSIONS

INTRO = """An InstructGPT-style pipeline (Ouyang et al. 2022) in three steps. **1. SFT** fine-tunes the model on
demonstrations (the embedded data: "Write a one-sentence review of the movie X." answered with real Rotten
Tomatoes snippets). **2. Reward model**: K responses per prompt are sampled from the SFT policy and ranked, by
a simulated labeler or by you below, and a scalar head learns -log σ(r_chosen − r_rejected) on every pair.
**3. PPO** optimises a LoRA adapter against the reward model minus a per-token KL penalty to the SFT model
(PPO-ptx adds the LM loss on demonstrations). Then compare SFT and PPO answers on held-out prompts."""

RANKING_SOURCES = ["simulated labeler", "my rankings", "uploaded comparisons"]
PPO_PANELS = {
    "reward": ["mean_reward", "mean_labeler_score"], "KL to SFT (nats)": ["mean_kl"],
    "losses": ["policy_loss", "value_loss"], "clip fraction": ["clip_fraction"],
}
JOB = "rlhf"  # one stage runs at a time per session; any stage's Stop ends it after its current step


def _state(request) -> dict:
    return SESSIONS.get(request).values.setdefault("rlhf", {})


def _need(state: dict, stage: str, what: str) -> None:
    if not state.get(stage):
        raise PeftlabError(f"Run {what} first.")


@user_errors
def run_sft_stage(model_name, demonstrations_file, comparisons_file, method, steps, learning_rate, seed,
                  request: gr.Request, progress=gr.Progress()):
    config = SFTConfig(method=method, steps=int(steps), learning_rate=float(learning_rate), seed=int(seed))
    current_caps().check("steps", config.steps, "SFT steps")
    if comparisons_file and not demonstrations_file:
        raise PeftlabError("Uploaded comparisons need uploaded demonstrations too (SFT learns from them first).")
    data = (RLHFData.uploaded(demonstrations_file, comparisons_file, seed=int(seed)) if demonstrations_file
            else RLHFData.embedded(seed=int(seed)))
    lm = load_model(model_name, dtype="fp32")  # trained in fp32 weights with bf16 autocast where the CPU has it
    state = _state(request)
    human = state.get("human") or HumanRankings()
    state.clear()  # a new SFT model resets what follows
    state.update(human=human, lm=lm, data=data)
    history, samples = [], []
    with job(request, JOB) as (_, stop):
        for item in train_sft(lm, data.demonstrations, config, data.heldout_prompts[:3], stop):
            if isinstance(item, SFTResult):
                state["sft"] = item
                break
            history.append({"step": item.step, "loss": item.loss})
            samples = [{"step": item.step, "prompt": p, "response": r} for p, r in item.samples] + samples
            progress(item.step / config.steps, desc=f"SFT step {item.step}/{config.steps}")
            if item.step % 5 == 0 or item.samples or item.step == config.steps:
                frame = pd.DataFrame(history)
                yield (f"SFT step {item.step}/{config.steps}, loss {item.loss:.3f}",
                       metric_curve(frame, "step", ["loss"], "SFT loss"), pd.DataFrame(samples))
        note = f"{stopped_note(stop)} " if stop.is_set() else ""
    result = state["sft"]
    if not result.losses:
        state.pop("sft")
        raise PeftlabError(f"{note}SFT stopped before its first step, so there is no SFT model; run it again.")
    yield (f"{note}SFT done: loss {result.losses[0]:.3f} → {result.losses[-1]:.3f} after {len(result.losses)} steps in "
           f"{result.seconds:.0f} s. Next: the reward model.", metric_curve(pd.DataFrame(history), "step", ["loss"], "SFT loss"),
           pd.DataFrame(samples))


@user_errors
def sample_for_ranking(k, seed, request: gr.Request):
    if int(k) < 2:
        raise PeftlabError(f"A ranking needs K of at least 2 responses, not {int(k)}.")
    state = _state(request)
    _need(state, "sft", "step 1 (SFT)")
    prompt = random.Random(int(seed) + len(state["human"])).choice(state["data"].train_prompts)
    rollout = sample_responses(state["sft"].model, state["lm"].tokenizer, [prompt] * int(k), seed=int(seed) + len(state["human"]))
    state["pending"] = (prompt, rollout.responses)
    table = pd.DataFrame({"#": range(1, int(k) + 1), "response": rollout.responses})
    return f"**Prompt:** {prompt}", table, ""


@user_errors
def save_ranking(ranking_text, request: gr.Request):
    state = _state(request)
    if not state.get("pending"):
        raise PeftlabError("Sample responses to rank first.")
    prompt, responses = state["pending"]
    try:
        ranking = [int(part) - 1 for part in str(ranking_text).replace(" ", "").split(",") if part]
    except ValueError:
        raise PeftlabError(f"Write the ranking as response numbers, best first, such as 2,1,3,4; not {ranking_text!r}.") from None
    state["human"].add(prompt, responses, ranking)
    state["pending"] = None
    human = state["human"]
    return f"{len(human)} rankings saved: {len(human.comparisons())} comparisons for the reward model."


def _comparisons(state: dict, source: str, labeler_name: str, config: PipelineConfig):
    data = state["data"]
    if source == "my rankings":
        pairs = state["human"].comparisons()
        prompts = list(dict.fromkeys(p.prompt for p in pairs))
        if len(prompts) < 2:
            raise PeftlabError("Rank responses for at least 2 prompts first: one part trains the reward model, one tests it.")
        held = set(prompts[: max(1, len(prompts) // 5)])
        return [p for p in pairs if p.prompt not in held], [p for p in pairs if p.prompt in held]
    if source == "uploaded comparisons" and data.comparisons is None:
        raise PeftlabError("No comparisons were uploaded with the demonstrations in step 1.")
    if source == "simulated labeler":
        data = replace(data, comparisons=None)
    return ranked_comparisons(state["sft"].model, state["lm"].tokenizer, data, config, labeler_by_name(labeler_name))


@user_errors
def run_reward_stage(source, labeler_name, k, rm_pairs, lora_r, steps, seed, request: gr.Request,
                     progress=gr.Progress()):
    state = _state(request)
    _need(state, "sft", "step 1 (SFT)")
    reward_config = RewardConfig(lora_r=int(lora_r), steps=int(steps), seed=int(seed))
    config = PipelineConfig(labeler=labeler_name, k=int(k), rm_pairs=int(rm_pairs), seed=int(seed), reward=reward_config)
    caps = current_caps()
    caps.check("steps", reward_config.steps, "Reward model steps")
    caps.check("comparisons", config.rm_pairs, "Training comparisons")
    with job(request, JOB) as (_, stop):
        progress(0, desc="sampling and ranking responses")
        train_pairs, heldout_pairs = _comparisons(state, source, labeler_name, config)
        state.pop("ppo", None)
        history = []
        for item in train_reward_model(state["sft"].model, state["lm"].tokenizer, train_pairs, heldout_pairs,
                                       reward_config, stop):
            if isinstance(item, RewardResult):
                state["reward"] = item
                break
            history.append(asdict(item))
            progress(item.step / reward_config.steps, desc=f"reward model step {item.step}")
        note = f"{stopped_note(stop)} Kept after {len(history)} of {reward_config.steps} steps. " if stop.is_set() else ""
    frame = pd.DataFrame(history).ffill()
    plot = metric_curve(frame, "step", ["loss", "train_accuracy", "heldout_accuracy"], "Reward model training") if history else None
    examples = pd.DataFrame([asdict(p) for p in train_pairs[:20]])
    status = (f"{note}Reward model: held-out pair accuracy **{state['reward'].heldout_accuracy:.1%}** on "
              f"{len(heldout_pairs)} comparisons ({len(train_pairs)} trained on). Next: PPO.")
    return status, plot, examples


@user_errors
def run_ppo_stage(labeler_name, steps, beta, adaptive_kl, target_kl, ptx_coef, learning_rate, seed,
                  request: gr.Request, progress=gr.Progress()):
    state = _state(request)
    _need(state, "reward", "step 2 (reward model)")
    config = PPOConfig(steps=int(steps), beta=float(beta), adaptive_kl=bool(adaptive_kl), target_kl=float(target_kl),
                       ptx_coef=float(ptx_coef), learning_rate=float(learning_rate), seed=int(seed))
    current_caps().check("ppo_steps", config.steps, "PPO steps")
    data, lm = state["data"], state["lm"]
    history, samples = [], []
    with job(request, JOB) as (_, stop):
        for item in train_ppo(state["sft"].model, lm.tokenizer, state["reward"].model, data.train_prompts, config,
                              labeler_by_name(labeler_name), data.demonstrations, stop):
            if isinstance(item, PPOResult):
                state["ppo"] = item
                break
            history.append({k: v for k, v in asdict(item).items() if k != "sample"})
            samples.insert(0, {"step": item.step, "prompt": item.sample[0], "response": item.sample[1]})
            progress(item.step / config.steps, desc=f"PPO step {item.step}/{config.steps}")
            yield (f"PPO step {item.step}/{config.steps}: reward {item.mean_reward:+.2f}, KL {item.mean_kl:.2f} nats",
                   metric_panels(pd.DataFrame(history), "step", PPO_PANELS, "PPO"), pd.DataFrame(samples))
        note = stopped_note(stop)
    result = state["ppo"]
    done = (f"PPO stopped after {len(result.history)} of {config.steps} steps; the policy so far is kept ({note.lower()})"
            if len(result.history) < config.steps else "PPO done")
    yield (f"{done} ({result.seconds:.0f} s). Compare the SFT and PPO policies below.",
           metric_panels(pd.DataFrame(history), "step", PPO_PANELS, "PPO") if history else None, pd.DataFrame(samples))


@user_errors
def evaluate_stage(labeler_name, prompts, seed, request: gr.Request):
    state = _state(request)
    _need(state, "ppo", "step 3 (PPO)")
    heldout = state["data"].heldout_prompts[: int(prompts)]
    comparison = compare_policies(state["ppo"].policy, state["lm"].tokenizer, state["reward"].model,
                                  labeler_by_name(labeler_name), heldout, samples_per_prompt=1, seed=int(seed))
    s = comparison.summary
    status = (f"On {s['prompts']} held-out prompts, {s['labeler']} score: SFT **{s['sft_mean_score']:+.3f}** → PPO "
              f"**{s['ppo_mean_score']:+.3f}**; reward model: {s['sft_mean_reward']:+.2f} → {s['ppo_mean_reward']:+.2f}; "
              f"KL of PPO to SFT {s['mean_kl']:.2f} nats per response.")
    plot = score_comparison(comparison.table, "sft_labeler_score", "ppo_labeler_score", f"{s['labeler']} score")
    return status, comparison.table.round(3), plot


@user_errors
def download_stage(stage, request: gr.Request):
    savers = {"SFT adapter": ("sft", "step 1 (SFT)", lambda r: r.save),
              "reward model": ("reward", "step 2 (reward model)", lambda r: r.model.save),
              "PPO adapter": ("ppo", "step 3 (PPO)", lambda r: r.policy.save)}
    key, what, saver = savers[stage]
    state = _state(request)
    _need(state, key, what)
    return str(zip_saved(saver(state[key]), SESSIONS.get(request).path(f"peftlab-rlhf-{stage.replace(' ', '-')}.zip")))


def build_rlhf_tab() -> None:
    gr.Markdown(INTRO)
    pipeline, sft_defaults, ppo_defaults = PipelineConfig(), SFTConfig(), PPOConfig()
    with gr.Row():
        model = model_picker()
        labeler = gr.Dropdown(list(LABELERS), value=pipeline.labeler, label="Simulated labeler")
        seed = gr.Number(0, precision=0, label="Seed")
    with gr.Row():
        demonstrations = gr.File(label="Demonstrations JSONL {prompt, response} (optional)" + upload_limit_note(),
                                 file_types=[".jsonl"], height=100)
        comparisons = gr.File(label="Comparisons JSONL {prompt, chosen, rejected} or {prompt, ranked} (optional)"
                              + upload_limit_note(), file_types=[".jsonl"], height=100)

    gr.Markdown("### 1. Supervised fine-tuning")
    with gr.Row():
        sft_method = gr.Radio(list(SFT_METHODS), value=sft_defaults.method, label="Method")
        sft_steps = capped_number(sft_defaults.steps, "Steps", "steps")
        sft_lr = gr.Number(sft_defaults.learning_rate, label="Learning rate")
        sft_button = gr.Button("Run SFT", variant="primary")
        sft_stop = gr.Button("Stop", variant="stop")
    sft_status = gr.Markdown()
    with gr.Row():
        sft_plot = gr.Plot(label="SFT loss")
        sft_samples = gr.Dataframe(label="Samples while training", interactive=False, max_height=300)

    gr.Markdown("### 2. Reward model")
    with gr.Accordion("Rank responses yourself (the human labeler screen)", open=False):
        with gr.Row():
            rank_k = gr.Number(pipeline.k, precision=0, minimum=2, label="K responses")
            sample_button = gr.Button("Sample responses to rank")
        rank_prompt = gr.Markdown()
        rank_table = gr.Dataframe(label="Responses", interactive=False)
        with gr.Row():
            ranking = gr.Textbox(label="Your ranking, best first (response numbers, e.g. 2,1,3,4)")
            save_button = gr.Button("Save ranking")
        rank_status = gr.Markdown()
    with gr.Row():
        source = gr.Radio(RANKING_SOURCES, value=RANKING_SOURCES[0], label="Comparisons from")
        k = gr.Number(pipeline.k, precision=0, minimum=2, label="K samples ranked per prompt")
        rm_pairs = capped_number(pipeline.rm_pairs, "Training comparisons", "comparisons")
        rm_lora = gr.Number(pipeline.reward.lora_r, precision=0, minimum=0, label="LoRA rank (0 = head only)")
        rm_steps = capped_number(pipeline.reward.steps, "Steps", "steps")
        rm_button = gr.Button("Train the reward model", variant="primary")
        rm_stop = gr.Button("Stop", variant="stop")
    rm_status = gr.Markdown()
    with gr.Row():
        rm_plot = gr.Plot(label="Reward model")
        rm_pairs_table = gr.Dataframe(label="Some training comparisons", interactive=False, max_height=300)

    gr.Markdown("### 3. PPO")
    with gr.Row():
        ppo_steps = capped_number(ppo_defaults.steps, "Steps", "ppo_steps")
        beta = gr.Number(ppo_defaults.beta, label="KL coefficient β")
        adaptive = gr.Checkbox(ppo_defaults.adaptive_kl, label="Adaptive β")
        target_kl = gr.Number(ppo_defaults.target_kl, label="Target KL (nats)")
        ptx = gr.Number(ppo_defaults.ptx_coef, minimum=0, label="PPO-ptx coefficient γ")
        ppo_lr = gr.Number(ppo_defaults.learning_rate, label="Learning rate")
    with gr.Row():
        ppo_button = gr.Button("Run PPO", variant="primary")
        ppo_stop = gr.Button("Stop", variant="stop")
    ppo_status = gr.Markdown()
    ppo_plot = gr.Plot(label="PPO")
    ppo_samples = gr.Dataframe(label="Samples while training", interactive=False, max_height=300)

    gr.Markdown("### SFT vs PPO on held-out prompts")
    with gr.Row():
        eval_prompts = gr.Number(32, precision=0, minimum=1, label="Held-out prompts")
        eval_button = gr.Button("Compare", variant="primary")
    eval_status = gr.Markdown()
    eval_plot = gr.Plot(label="Labeler scores")
    eval_table = gr.Dataframe(label="Side by side", interactive=False, wrap=True, max_height=400)
    with gr.Row():
        stage = gr.Radio(["SFT adapter", "reward model", "PPO adapter"], value="PPO adapter", label="Download")
        download_button = gr.Button("Download (zip)")
        download_file = gr.File(label="Weights")

    sft_button.click(run_sft_stage, [model, demonstrations, comparisons, sft_method, sft_steps, sft_lr, seed],
                     [sft_status, sft_plot, sft_samples], api_name="rlhf_sft", **heavy())
    sft_stop.click(stop_handler(JOB, "the SFT stage"), None, [sft_status], api_name="rlhf_sft_stop", **INSTANT)
    sample_button.click(sample_for_ranking, [rank_k, seed], [rank_prompt, rank_table, ranking],
                        api_name="rlhf_sample_for_ranking", **light())
    save_button.click(save_ranking, [ranking], [rank_status], api_name="rlhf_save_ranking", **INSTANT)
    rm_button.click(run_reward_stage, [source, labeler, k, rm_pairs, rm_lora, rm_steps, seed],
                    [rm_status, rm_plot, rm_pairs_table], api_name="rlhf_reward", **heavy())
    rm_stop.click(stop_handler(JOB, "the reward model"), None, [rm_status], api_name="rlhf_reward_stop", **INSTANT)
    ppo_button.click(run_ppo_stage, [labeler, ppo_steps, beta, adaptive, target_kl, ptx, ppo_lr, seed],
                     [ppo_status, ppo_plot, ppo_samples], api_name="rlhf_ppo", **heavy())
    ppo_stop.click(stop_handler(JOB, "PPO"), None, [ppo_status], api_name="rlhf_ppo_stop", **INSTANT)
    eval_button.click(evaluate_stage, [labeler, eval_prompts, seed], [eval_status, eval_table, eval_plot],
                      api_name="rlhf_evaluate", **heavy())
    download_button.click(download_stage, [stage], [download_file], api_name="rlhf_download", **light())
