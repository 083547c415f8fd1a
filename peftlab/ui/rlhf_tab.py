"""The RLHF tab: SFT -> reward model -> PPO and/or DPO, a screen where a person ranks samples, and SFT vs each route.

Its layout: the inputs, buttons and outputs of each stage, wired to what each press does (`rlhf_stages`).
"""

from __future__ import annotations

import gradio as gr

from peftlab.config import capitalised
from peftlab.rlhf.data import load_comparisons, load_demonstrations
from peftlab.rlhf.dpo import DPOConfig
from peftlab.rlhf.labelers import LABELERS
from peftlab.rlhf.pipeline import (
    HELDOUT_PROMPTS,
    PipelineConfig,
)
from peftlab.rlhf.ppo import PPOConfig
from peftlab.rlhf.reward import REPORT_COLUMNS, RewardConfig
from peftlab.rlhf.session import STAGES
from peftlab.rlhf.sft import SFTConfig
from peftlab.rlhf.stored import RANKING_SOURCES, REFERENCE, SIMULATED
from peftlab.serving import current_caps
from peftlab.ui.common import (
    CHART_MIN_WIDTH,
    TEXT_CELL_CHARS,
    action_row,
    intro,
    model_picker,
    told_on_upload,
    upload_limit_note,
)
from peftlab.ui.display import fitted_table
from peftlab.ui.inputs import config_input, named_number
from peftlab.ui.presses import (
    INSTANT,
    answer,
    heavy_job,
    light,
    press_telling,
    status_line,
    stop_handler,
)
from peftlab.ui.rlhf_stages import (
    DOWNLOADS,
    JOB,
    MAX_RANKED,
    comparisons_source,
    download_stage,
    dpo_inputs,
    evaluate_stage,
    evaluation_inputs,
    ppo_inputs,
    reward_inputs,
    run_dpo_stage,
    run_ppo_stage,
    run_reward_stage,
    run_sft_stage,
    sample_for_ranking,
    samples_table,
    save_ranking,
    sft_inputs,
    side_by_side_header,
    stages_left,
)

SUMMARY = """An InstructGPT-style pipeline (Ouyang et al. 2022): **1. SFT**, **2. a reward model** on ranked samples,
**3. PPO** against it; or **DPO** (Rafailov et al. 2023) on the same comparisons. Then each route answers held-out
prompts beside SFT."""
DETAILS = """**1. SFT** fine-tunes the model on
demonstrations (the embedded data: "Write a one-sentence review of the movie X." answered with real Rotten
Tomatoes snippets). **2. Reward model**: K responses per prompt are sampled from the SFT policy and ranked, by
a simulated labeler or by you below, and a scalar head learns -log σ(r_chosen − r_rejected) on every pair.
**3. PPO** optimises a LoRA adapter against the reward model minus a per-token KL penalty to the SFT model
(PPO-ptx adds the LM loss on demonstrations). **DPO** (Rafailov et al. 2023) is the other route from the same SFT
model and the same comparisons: no reward model, no sampling, a LoRA adapter trained on
−log σ(β [log-ratio of the chosen − log-ratio of the rejected response]) against the SFT model. Then compare
SFT, PPO and DPO answers on held-out prompts: the score each gets and how far each drifted from SFT (KL)."""


def build_rlhf_tab() -> None:
    intro(SUMMARY, DETAILS)
    with gr.Row():
        model = model_picker()
        labeler = config_input(PipelineConfig, "labeler", gr.Dropdown, choices=list(LABELERS))
        seed = config_input(PipelineConfig, "seed")
    with gr.Row():
        demonstrations = gr.File(
            label="Demonstrations JSONL {prompt, response} (optional)" + upload_limit_note(),
            file_types=[".jsonl"],
            height=140,  # its two-line label leaves "Click to Upload" room only above about 130 px
            min_width=CHART_MIN_WIDTH,  # each on its own line on a phone: in half of it the label covered the drop text
        )
        comparisons = gr.File(
            label="Comparisons JSONL {prompt, chosen, rejected} or {prompt, ranked} (optional)" + upload_limit_note(),
            file_types=[".jsonl"],
            height=140,
            min_width=CHART_MIN_WIDTH,
        )
    told_on_upload(demonstrations, load_demonstrations, "demonstration")
    # a ranking of K counts as its K(K-1)/2 pairs; a file over the public cap is refused before they fill memory
    told_on_upload(comparisons, lambda path: load_comparisons(path, current_caps().comparisons), "comparison")

    gr.Markdown("### 1. Supervised fine-tuning")
    with gr.Row():
        sft_method = config_input(SFTConfig, "method")
        sft_steps = config_input(SFTConfig, "steps", elem_id="rlhf-sft-steps")
        sft_lr = config_input(SFTConfig, "learning_rate")
    with action_row():  # the first step's button stays in sight under the introduction and the uploads
        sft_button = gr.Button("Run SFT", variant="primary")
        sft_stop = gr.Button("Stop", variant="stop")
    sft_status = status_line()
    with gr.Row():
        sft_plot = gr.Plot(label="SFT loss", min_width=CHART_MIN_WIDTH)
        sft_samples = samples_table()

    gr.Markdown("### 2. Reward model")
    with gr.Accordion("Rank responses yourself (the human labeler screen)", open=False):
        gr.Markdown(
            "Sample K answers of the SFT model to a training prompt, read each, and give each a rank: **1 is the "
            "best**. Equal ranks are ties and make no comparison. A ranking of K answers gives up to K(K−1)/2 "
            "comparisons; rank answers to at least 2 prompts (one part trains the reward model, one tests it)."
        )
        with gr.Row():
            # its own help: the reward model's K below is the simulated labeler's, and two boxes alike read as one
            rank_k = config_input(
                PipelineConfig,
                "k",
                maximum=MAX_RANKED,
                elem_id="rlhf-rank-k",
                info="answers you sample from the SFT model and rank yourself, one training prompt at a time",
            )
            sample_button = gr.Button("Sample responses to rank")
        rank_prompt = gr.Markdown()
        rank_columns, rank_texts, rank_choices = [], [], []
        for number in range(1, MAX_RANKED + 1):
            with gr.Column(visible=False, variant="panel") as column:
                rank_texts.append(gr.Textbox(label=f"Response {number}", interactive=False, lines=1, max_lines=12))
                rank_choices.append(gr.Radio([], label=f"Rank of response {number} (1 = best)"))
            rank_columns.append(column)
        save_button = gr.Button("Save ranking")
        rank_status = status_line("No rankings saved yet.")
    with gr.Row():
        source = gr.Radio(list(RANKING_SOURCES), value=SIMULATED, label="Comparisons from")
        comparisons.change(comparisons_source, [comparisons, source], [source], api_visibility="private", **INSTANT)
        k = config_input(
            PipelineConfig, "k", info="ranked by the simulated labeler; your own rankings keep the K you sampled"
        )
        rm_pairs = config_input(PipelineConfig, "rm_pairs")
        rm_lora = config_input(RewardConfig, "lora_r", label="Reward model LoRA rank (0 = head only)")
        rm_steps = config_input(RewardConfig, "steps", elem_id="rlhf-rm-steps")
        rm_button = gr.Button("Train the reward model", variant="primary")
        rm_stop = gr.Button("Stop", variant="stop")
    rm_status = status_line()
    with gr.Row():
        rm_plot = gr.Plot(label="Reward model", min_width=CHART_MIN_WIDTH)
        rm_check = fitted_table(
            label="Held-out accuracy by the labeler's margin, and InstructGPT's for scale", headers=list(REPORT_COLUMNS)
        )
    rm_pairs_table = fitted_table(
        label="Some training comparisons",
        headers=["prompt", "chosen", "rejected"],
        max_chars=TEXT_CELL_CHARS,
        max_height=300,
    )

    gr.Markdown("### 3. PPO")
    with gr.Row():
        ppo = {
            name: config_input(PPOConfig, name, elem_id=f"rlhf-ppo-{name}")
            for name in ("steps", "beta", "adaptive_kl", "target_kl", "ptx_coef", "learning_rate")
        }
    with gr.Row():
        ppo_button = gr.Button("Run PPO", variant="primary")
        ppo_stop = gr.Button("Stop", variant="stop")
    ppo_status = status_line()
    ppo_plot = gr.Plot(label="PPO")
    ppo_samples = samples_table()

    gr.Markdown("### DPO: the other route, on the reward model's comparisons")
    with gr.Row():
        dpo = {
            name: config_input(DPOConfig, name, elem_id=f"rlhf-dpo-{name}")
            for name in ("steps", "beta", "learning_rate")
        }
    with gr.Row():
        dpo_button = gr.Button("Run DPO", variant="primary")
        dpo_stop = gr.Button("Stop", variant="stop")
    dpo_status = status_line()
    dpo_plot = gr.Plot(label="DPO")

    gr.Markdown("### SFT vs PPO vs DPO on held-out prompts")
    with gr.Row():
        eval_prompts = named_number(HELDOUT_PROMPTS, precision=0, minimum=1, label="Held-out prompts")
        eval_button = gr.Button("Compare", variant="primary")
        eval_stop = gr.Button("Stop", variant="stop")
    eval_status = status_line()
    with gr.Row():
        eval_plot = gr.Plot(label="Labeler scores", min_width=CHART_MIN_WIDTH)
        frontier_plot = gr.Plot(label="Score against KL", min_width=CHART_MIN_WIDTH)
    eval_table = fitted_table(
        label="Side by side",
        headers=[
            "prompt",
            *(side_by_side_header(f"{route}_response") for route in (REFERENCE, "ppo", "dpo")),
        ],  # and scores
        max_chars=TEXT_CELL_CHARS,
        max_height=400,
    )
    with gr.Row():
        stage = gr.Radio(list(DOWNLOADS), value="PPO adapter", label="Download")
        download_button = gr.Button("Download (zip)")
        download_file = gr.File(label="Weights")
    download_status = status_line()

    later = {
        "reward": [rm_status, rm_plot, rm_pairs_table, rm_check],
        "ppo": [ppo_status, ppo_plot, ppo_samples],
        "dpo": [dpo_status, dpo_plot],
        "evaluation": [eval_status, eval_table, eval_plot, frontier_plot],
    }

    after_reward = {stage: later[stage] for stage in ("ppo", "dpo", "evaluation")}  # its own line keeps its answer

    def empty_dropped_stages(request: gr.Request):
        return stages_left(request, later)

    def empty_dropped_routes(request: gr.Request):
        return stages_left(request, after_reward)

    def empty_replaced_evaluation(request: gr.Request):
        return stages_left(request, {"evaluation": later["evaluation"]})

    sft_form = dict(
        model=model,
        demonstrations=demonstrations,
        comparisons=comparisons,
        sft_method=sft_method,
        sft_steps=sft_steps,
        sft_learning_rate=sft_lr,
        seed=seed,
    )
    heavy_job(
        sft_button,
        run_sft_stage,
        inputs_kwargs=sft_form,
        outputs=[sft_status, sft_plot, sft_samples],
        api_name="rlhf_sft",
        checks=sft_inputs,
        kind=JOB,
        name=capitalised(STAGES["sft"]),
    ).then(empty_dropped_stages, None, sum(later.values(), []), api_visibility="private", **INSTANT)
    sft_stop.click(stop_handler(JOB, "the SFT stage"), None, [sft_status], api_name="rlhf_sft_stop", **INSTANT)

    rank_slots = rank_columns + rank_texts + rank_choices
    # progress and errors on the line above the answers (a saved ranking's on its status line, as every status
    # line's): a rank left out is fixed while reading them
    sample_button.click(
        sample_for_ranking,
        [rank_k, seed],
        [rank_prompt, *rank_slots],
        api_name="rlhf_sample_for_ranking",
        show_progress_on=rank_prompt,
        trigger_mode="once",  # a press while it samples is not a second sampling
        **light(),
    )
    press_telling(
        save_button,
        save_ranking,
        rank_choices,
        [rank_status, rank_prompt, *rank_slots],
        rank_status,
        "rlhf_save_ranking",
        INSTANT,  # the session's rankings alone
    )
    rm_form = dict(
        source=source,
        labeler=labeler,
        k=k,
        rm_pairs=rm_pairs,
        rm_lora_r=rm_lora,
        rm_steps=rm_steps,
        seed=seed,
        comparisons=comparisons,  # last: an API client's earlier calls (without it) keep their places
    )
    heavy_job(
        rm_button,
        run_reward_stage,
        inputs_kwargs=rm_form,
        outputs=[rm_status, rm_plot, rm_pairs_table, rm_check],
        api_name="rlhf_reward",
        checks=reward_inputs,
        kind=JOB,
        name=capitalised(STAGES["reward"]),
    ).then(empty_dropped_routes, None, sum(after_reward.values(), []), api_visibility="private", **INSTANT)
    rm_stop.click(stop_handler(JOB, "the reward model"), None, [rm_status], api_name="rlhf_reward_stop", **INSTANT)
    ppo_form = dict(labeler=labeler, **{f"ppo_{name}": box for name, box in ppo.items()}, seed=seed)
    heavy_job(
        ppo_button,
        run_ppo_stage,
        inputs_kwargs=ppo_form,
        outputs=[ppo_status, ppo_plot, ppo_samples],
        api_name="rlhf_ppo",
        checks=ppo_inputs,
        kind=JOB,
        name=capitalised(STAGES["ppo"]),
    ).then(empty_replaced_evaluation, None, later["evaluation"], api_visibility="private", **INSTANT)
    ppo_stop.click(stop_handler(JOB, "PPO"), None, [ppo_status], api_name="rlhf_ppo_stop", **INSTANT)
    heavy_job(
        dpo_button,
        run_dpo_stage,
        inputs_kwargs=dict(**{f"dpo_{name}": box for name, box in dpo.items()}, seed=seed),
        outputs=[dpo_status, dpo_plot],
        api_name="rlhf_dpo",
        checks=dpo_inputs,
        kind=JOB,
        name=capitalised(STAGES["dpo"]),
    ).then(empty_replaced_evaluation, None, later["evaluation"], api_visibility="private", **INSTANT)
    dpo_stop.click(stop_handler(JOB, "DPO"), None, [dpo_status], api_name="rlhf_dpo_stop", **INSTANT)
    evaluated = [eval_status, eval_table, eval_plot, frontier_plot]  # not kept by the session: one press's answer
    answer(
        heavy_job(
            eval_button,
            evaluate_stage,
            inputs_kwargs=dict(labeler_name=labeler, prompts=eval_prompts, seed=seed),
            outputs=evaluated,
            api_name="rlhf_evaluate",
            checks=evaluation_inputs,
            kind=JOB,  # it samples from the stages' models: no stage may replace them meanwhile
            name="The comparison",
        ),
        evaluated,
        eval_button,
    )
    eval_stop.click(
        stop_handler(JOB, "the comparison", "the batch of answers it is sampling; nothing is kept"),
        None,
        [eval_status],
        api_name="rlhf_evaluate_stop",
        **INSTANT,
    )
    answer(
        press_telling(
            download_button, download_stage, [stage], [download_file, download_status], download_status, "rlhf_download"
        ),
        [download_file, download_status],
        download_button,
        # a stage pressed since trains other weights than the file's (and a failed download's "Error" badge stood
        # over the box after the stages that followed had succeeded)
        stale_on=[button.click for button in (sft_button, rm_button, ppo_button, dpo_button)],
    )
