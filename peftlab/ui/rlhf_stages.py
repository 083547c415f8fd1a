"""What the RLHF tab's presses do: each stage's run (SFT, reward model, PPO, DPO) with its progress, charts and
Stop; the ranking screen's sampling and saving; the side-by-side evaluation; the downloads. The layout that wires
them to inputs and outputs is `rlhf_tab`.

The stages a visitor runs live in an `RLHFSession` (the library's: it owns which stage needs which and what
a new stage resets), kept in the browser session's values so it goes when the visitor leaves. Each stage
has a stop flag that ends it after its current step and keeps what it trained.
"""

from __future__ import annotations

import time
from contextlib import closing
from dataclasses import asdict, replace

import gradio as gr
import pandas as pd

from peftlab.config import counted
from peftlab.errors import PeftlabError
from peftlab.models import check_width
from peftlab.plots import metric_curve, metric_panels, score_comparison, score_kl_frontier
from peftlab.rlhf.dpo import DPOConfig, DPOResult
from peftlab.rlhf.evaluation import route_methods, route_seconds
from peftlab.rlhf.generation import sample_responses
from peftlab.rlhf.labelers import labeler_by_name
from peftlab.rlhf.pipeline import (
    PipelineConfig,
    RLHFData,
    check_ranks,
    heldout_ranked_prompts,
    ranked_prompt_count,
)
from peftlab.rlhf.ppo import PPOConfig, PPOResult
from peftlab.rlhf.reward import RewardConfig, RewardResult, cut_ties_note, heldout_report
from peftlab.rlhf.session import SAMPLE_PROMPTS, RLHFSession
from peftlab.rlhf.sft import SFTConfig, SFTResult, sft_samples_at
from peftlab.rlhf.stored import MINE, SIMULATED, UPLOADED
from peftlab.seeding import waited_seconds
from peftlab.serving import current_caps
from peftlab.training import Pace
from peftlab.tuning import loss_note
from peftlab.ui.common import (
    TEXT_CELL_CHARS,
    load_model,
)
from peftlab.ui.display import warning_notes
from peftlab.ui.estimates import Paced, cost_key, known_pace, record_pace
from peftlab.ui.inputs import config_from_form
from peftlab.ui.presses import (
    job,
    keep_results,
    stopped_note,
    user_errors,
)
from peftlab.ui.rlhf_calls import Ranked, Sampled, ppo_in_chunks, reward_stage, saved_zip, session_call, stage
from peftlab.ui.sessions import SESSIONS
from peftlab.zerogpu import call_on_gpu, in_app_process_on_zero_gpu

PPO_PANELS = {
    "reward": ["mean_reward", "mean_labeler_score"],
    "KL to SFT (nats)": ["mean_kl"],
    "losses": ["policy_loss", "value_loss"],
    "clip fraction": ["clip_fraction"],
}
# TRL's DPO accuracy counts a tie as wrong (its first step, policy = reference, reads 0 %); the reward model's as half
DPO_RANKED = "pairs ranked right (a tie: wrong)"
DPO_PANELS = {"loss": ["loss"], "implicit reward margin": ["reward_margin"], DPO_RANKED: ["reward_accuracy"]}
# the loss apart from the accuracies: on one axis a loss of 0.69 read as a share beside the table's percentages
REWARD_PANELS = {"loss": ["loss"], "pairs ranked right": ["training pairs", "held-out pairs"]}
REWARD_COLUMNS = {"train_accuracy": "training pairs", "heldout_accuracy": "held-out pairs"}  # RewardEvent's -> legend
SHARE_PANELS = ("clip fraction", DPO_RANKED, "pairs ranked right")  # panels of PPO, DPO and the reward model: shares
DOWNLOADS = {"SFT adapter": "sft", "reward model": "reward", "PPO adapter": "ppo", "DPO adapter": "dpo"}
MAX_RANKED = 8  # response slots on the ranking screen (a larger K is refused there)
SAMPLING_BATCH = 32  # sample_responses' batch: responses sampled to price a sampling (fewer cost more each)
JOB = "rlhf"  # one stage runs at a time per session; any stage's Stop ends it after its current step
NEW_POLICY = "rlhf new policy"  # a session's value: PPO or DPO made a policy since the evaluation on the page


def _session(request) -> RLHFSession:
    return SESSIONS.get(request).values.setdefault("rlhf", RLHFSession())


def _idle_session(request) -> RLHFSession:
    """The visitor's RLHF session for a press that reads its models (sampling to rank, a download); a PeftlabError
    while a stage runs: it dropped the model it replaces as it started ("Run step 1 (SFT) first." was said while SFT
    ran), and a download then saved the weights the stage was about to replace."""
    SESSIONS.get(request).refuse_while_busy(JOB)
    return _session(request)


def _seed(form: dict) -> int:
    """The tab's one seed box, checked as the pipeline's setting: an emptied box is one sentence (int(None) was a
    bare "Error")."""
    return config_from_form(PipelineConfig, {"seed": form["seed"]}).seed


def _paced(request, stage: str, form: dict, on: tuple, config, plan: str, extra=lambda pace: 0.0) -> Paced:
    """A stage's press priced by its pace on this machine (`estimates.Paced`), measured per `on` (the model, the
    data) and the settings of `config` that set a step's cost."""
    return Paced(request, f"rlhf-{stage}", form, (*on, *cost_key(config)), config.steps, plan, extra)


def _sized(name: str, model: str, config, paced: Paced) -> dict:
    """How a stage of `config.steps` steps sizes its GPU call on ZeroGPU (`zerogpu.on_gpu`): priced per step of
    `model` by the settings that set a step's cost, and at least at the pace `paced` measured."""
    return dict(
        kind=f"rlhf-{name}:{model}:{cost_key(config)}",
        units=config.steps,
        what=counted(config.steps, f"{name} step"),
        shorter=f"use fewer {name} steps",
        measured_s=paced.measured(),
    )


def sft_inputs(form: dict) -> tuple[SFTConfig, RLHFData]:
    """The SFT config and the data of the form; a PeftlabError for any the stage would refuse before the model
    loads (also checked as the button is pressed, `heavy_job`)."""
    current_caps().check_model(form["model"])
    config = config_from_form(SFTConfig, form, prefix="sft_", seed=_seed(form))
    if form["comparisons"] and not form["demonstrations"]:
        raise PeftlabError("Uploaded comparisons need uploaded demonstrations too (SFT learns from them first).")
    data = (
        RLHFData.uploaded(
            form["demonstrations"], form["comparisons"], seed=config.seed, comparisons_limit=current_caps().comparisons
        )
        if form["demonstrations"]
        else RLHFData.embedded(seed=config.seed)
    )
    return config, data


def _dropping_warning(session: RLHFSession, stage: str, name: str) -> str:
    """What running `stage` (`name` in words) again would drop, as a sentence for its second press, or ""."""
    if dropped := session.dropped_by(stage):
        return f"Running {name} again drops {dropped}, trained on the current one: download what to keep first."
    return ""


@user_errors
def run_sft_stage(request: gr.Request, progress=gr.Progress(), **form):
    config, data = sft_inputs(form)
    lm = load_model(form["model"], dtype="fp32")  # trained in fp32 weights with bf16 autocast where the CPU has it
    paced = _paced(
        request, "sft", form, (lm.name, bool(form["demonstrations"])), config, counted(config.steps, "SFT step")
    )
    session = _session(request)
    if message := paced.refusal(_dropping_warning(session, "sft", "step 1 (SFT)")):
        yield message, gr.skip(), gr.skip()
        return
    kept = replace(session)
    history, samples = [], []
    progress(0, desc=f"SFT step 1/{config.steps}")
    yield f"SFT step 1/{config.steps}: loading the data and the model…", gr.skip(), gr.skip()  # not the last run's
    with (
        job(request, JOB) as (_, stop),
        closing(
            session_call(
                session, stage, "run_sft", lm, data, config, stop=stop, **_sized("SFT", lm.name, config, paced)
            )
        ) as stages,
    ):
        trained = False
        for item in stages:
            if isinstance(item, SFTResult):
                trained = bool(item.losses)  # none: stopped before its first step, the session left as it was
                continue  # the last item: the loop ends with the GPU call
            if message := paced.observe(item):
                stages.close()  # ended before the message shows: the button then takes the second press at once
                session.restore(kept)
                yield message, gr.skip(), gr.skip()
                return
            history.append({"step": item.step, "loss": item.loss})
            samples = [{"step": item.step, "prompt": p, "response": r} for p, r in item.samples] + samples
            progress(item.step / config.steps, desc=f"SFT step {item.step}/{config.steps}")
            line = f"SFT step {item.step}/{config.steps}, loss {item.loss:.3f}"
            upcoming = item.step + 1
            if data.heldout_prompts and upcoming <= config.steps and sft_samples_at(upcoming, config):
                # its answers take longer than a step on a CPU: "about 18 s left" stood for 100 s, as if it hung
                line += f"; step {upcoming} comes next, then answers to {SAMPLE_PROMPTS} held-out prompts to show"
            else:
                line += paced.time_left(item)
            if item.step % 5 == 0 or item.samples or item.step == config.steps:
                yield line, metric_curve(pd.DataFrame(history), "step", ["loss"], "SFT loss"), pd.DataFrame(samples)
            else:  # the line every step ("loading the data and the model…" stood under steps 1-4), the plot less often
                yield line, gr.skip(), gr.skip()
        # on ZeroGPU a Stop cannot reach a running call: the stage may have run to its end all the same
        if not trained:
            yield _untrained("SFT", stop.reason or "it was stopped"), gr.skip(), gr.skip()
            return
        note = f"{stopped_note(stop)} " if stop.is_set() and len(session.sft.losses) < config.steps else ""
    result = session.sft
    warning = loss_note("SFT", result.losses, config.learning_rate)  # a learning rate of 5 took it 4.1 → 29.7
    yield (
        f"{note}SFT done: loss {result.losses[0]:.3f} → {result.losses[-1]:.3f} after "
        f"{counted(len(result.losses), 'step')} in {result.seconds:.0f} s. Next: the reward model."
        + warning_notes([warning] if warning else []),
        metric_curve(pd.DataFrame(history), "step", ["loss"], "SFT loss"),
        pd.DataFrame(samples),
    )


def ranking_slots(responses: list[str]) -> list:
    """Updates of the ranking screen's MAX_RANKED slots: the first K show a response whole with ranks 1..K to
    pick, the rest hide (`responses` empty hides them all)."""
    k = len(responses)
    columns = [gr.update(visible=i < k) for i in range(MAX_RANKED)]
    texts = [gr.update(value=responses[i] if i < k else "") for i in range(MAX_RANKED)]
    ranks = [gr.update(choices=[(str(r), r) for r in range(1, k + 1)], value=None) for _ in range(MAX_RANKED)]
    return columns + texts + ranks


def ranking_count(session: RLHFSession) -> str:
    rankings, pairs = len(session.human), session.ranked_pairs()
    prompts = len({p.prompt for p in pairs})
    held = len(session.human.comparisons()) - len(pairs)
    return (
        f"**{counted(rankings, 'ranking')} saved**: {counted(len(pairs), 'comparison')} on "
        f'{counted(prompts, "prompt")} for the reward model (pick "{MINE}" below to train on them)'
        + (f"; left out: {counted(held, 'comparison')} on prompts now held out for the evaluation." if held else ".")
    )


@user_errors
def sample_for_ranking(k, seed, request: gr.Request):
    config = config_from_form(PipelineConfig, {"k": k, "seed": seed})  # an emptied box is one sentence
    session = _idle_session(request)
    session.need("sft")  # before the call: its sizing names the session's model
    # said at once: the sampling takes 10-30 s on a CPU, and the empty space under the button showed nothing meanwhile
    yield [f"Sampling {config.k} responses of the SFT policy to one training prompt…", *ranking_slots([])]
    # a job of the tab while it samples: a stage pressed meanwhile waits (on ZeroGPU the session coming back from the
    # sampling's call replaced what that stage made)
    with job(request, JOB, "The sampling to rank"):
        (prompt, responses), *_ = session_call(
            session,
            stage,
            "sample_for_ranking",
            config.k,
            config.seed,
            kind=f"rlhf-rank:{session.lm.name}",
            what=f"Sampling {config.k} responses",
        )
    yield [f"**Prompt:** {prompt}", *ranking_slots(responses)]


@user_errors
def save_ranking(request: gr.Request, *ranks):
    session = _session(request)
    k = len(session.pending[1]) if session.pending else 0
    session.save_ranking(ranks[:k])
    return [ranking_count(session), "", *ranking_slots([])]


def _sampling_pace(session: RLHFSession, key: tuple, progress: gr.Progress) -> Pace:
    """Seconds per response the SFT policy samples for ranking: from the last sampling on this machine, or from one
    batch of responses sampled now (a few seconds; minutes on a busy CPU, said on `progress`)."""
    if (pace := known_pace(key)) is None:
        progress(0, desc="timing one batch of samples, to estimate the job")
        pace = Pace(
            0.0,
            call_on_gpu(_sampling_seconds, session, key[-1], kind=f"rlhf-sampling:{session.lm.name}", what="Sampling"),
        )
        record_pace(key, pace)
    return pace


def _sampling_seconds(session: RLHFSession, max_new_tokens: int) -> float:
    """Seconds per response of one batch of the SFT policy's samples, measured now (the wait for another job's
    seeded work left out, `seeding.waited_seconds`)."""
    started, waited = time.perf_counter(), waited_seconds()
    prompts = session.data.train_prompts[:SAMPLING_BATCH]
    sample_responses(session.sft.model, session.lm.tokenizer, prompts, max_new_tokens=max_new_tokens, seed=0)
    return (time.perf_counter() - started - (waited_seconds() - waited)) / len(prompts)


def reward_inputs(form: dict, request: gr.Request | None) -> tuple[RLHFSession, RewardConfig, PipelineConfig]:
    """The visitor's RLHF session and the reward model's configs; a PeftlabError before SFT has run or for a
    setting the stage refuses (also checked as the button is pressed, `heavy_job`)."""
    session = _session(request)
    session.check_source(form["source"], form["comparisons"])
    reward_config = config_from_form(RewardConfig, form, prefix="rm_", seed=_seed(form))
    config = config_from_form(PipelineConfig, form, reward=reward_config)
    if form["source"] == SIMULATED:
        ranked_prompt_count(config, session.data)  # too few prompts to rank: said at the press, not after the wait
    check_ranks(session.lm.model, config, ("reward",))  # ... and a rank too large (it was, after the sampling)
    return session, reward_config, config


@user_errors
def run_reward_stage(request: gr.Request, progress=gr.Progress(), **form):
    session, reward_config, config = reward_inputs(form, request)
    prompts = ranked_prompt_count(config, session.data) if form["source"] == SIMULATED else 0
    sampled = prompts * config.k
    sampling = ("rlhf-sampling", session.lm.name, config.max_new_tokens)
    sampling_seconds = sampled * _sampling_pace(session, sampling, progress).per_step if sampled else 0.0
    plan = counted(reward_config.steps, "step")
    if sampled:  # most of it: the held-out prompts, whatever the comparisons asked ("2 comparisons" read as 54)
        held_out = heldout_ranked_prompts(config, session.data)
        plan = (
            f"{sampled} samples to rank (K = {config.k} for each of {counted(prompts, 'prompt')}: "
            f"{prompts - held_out} for {counted(config.rm_pairs, 'training comparison')}, {held_out} held out to "
            f"test the reward model) and {plan}"
        )
    paced = _paced(
        request, "reward", form, (session.lm.name,), reward_config, plan, extra=lambda pace: sampling_seconds
    )
    if message := paced.refusal(_dropping_warning(session, "reward", "step 2 (the reward model)")):
        return message, gr.skip(), gr.skip(), gr.skip()
    kept = replace(session)
    with job(request, JOB) as (_, stop):
        progress(0, desc=f"sampling and ranking {sampled} responses" if sampled else "reading the comparisons")
        history, train_pairs, so_far = [], None, Sampled(0, sampled)
        for item in session_call(
            session,
            reward_stage,
            form["source"],
            config,
            reward_config,
            stop=stop,
            kind=f"rlhf-reward:{session.lm.name}:{cost_key(reward_config)}",
            units=sampled + reward_config.steps,  # responses sampled and steps trained, priced alike per kind
            what=plan[0].upper() + plan[1:],
            shorter="rank fewer prompts (or K) or train fewer steps",
            measured_s=paced.measured(),
        ):
            if isinstance(item, Sampled):
                so_far = item
                progress(item.done / item.total, desc=f"sampling responses to rank: {item.done}/{item.total}")
                continue
            if isinstance(item, Ranked):
                train_pairs, heldout_pairs = item.train, item.heldout
                if sampled:
                    record_pace(sampling, Pace(0.0, item.seconds / sampled))
                continue
            if isinstance(item, RewardResult):
                continue  # the last item: the loop ends with the GPU call
            paced.record(item)  # its steps are cheap beside the sampling: priced for the next press, never stopped
            history.append(asdict(item))
            progress(item.step / reward_config.steps, desc=f"reward model step {item.step}")
        if train_pairs is None:  # stopped while sampling
            return (
                f"{stopped_note(stop)} The sampling was {so_far.done / max(so_far.total, 1):.0%} through its "
                f"{so_far.total} responses to rank; no reward model was trained"
                + (", and the one trained before is kept." if session.reward else "."),
                gr.skip(),
                gr.skip(),
                gr.skip(),
            )
        if stop.is_set() and not history:  # an untrained head would have been kept, and PPO run against it
            session.restore(kept)
            return _untrained("The reward model", stop.reason), gr.skip(), gr.skip(), gr.skip()
        stopped = stop.is_set() and len(history) < reward_config.steps  # a Stop may come too late for a GPU call
        note = (
            f"{stopped_note(stop)} Kept after {len(history)} of {counted(reward_config.steps, 'step')}. "
            if stopped
            else ""
        )
    frame = pd.DataFrame(history).ffill().rename(columns=REWARD_COLUMNS)
    plot = metric_panels(frame, "step", REWARD_PANELS, "Reward model training", SHARE_PANELS) if history else None
    examples = pd.DataFrame([asdict(p) for p in train_pairs[:20]])
    # margins are known only where a simulated labeler scored the responses
    labeler = labeler_by_name(form["labeler"]) if form["source"] == SIMULATED else None
    check = heldout_report(session.reward, heldout_pairs, labeler)
    prompts = len({p.prompt for p in heldout_pairs})
    # said only where a prompt has several: with K = 2 each has one, and the note read as a puzzle
    correlated = " (the interval counts one prompt's comparisons as correlated)" if prompts < len(heldout_pairs) else ""
    status = (
        f"{note}Reward model: held-out pair accuracy **{check.accuracy.value:.1%}** (95 % interval "
        f"{check.accuracy.low:.1%} to {check.accuracy.high:.1%}) on "
        f"{counted(len(heldout_pairs), 'held-out comparison')} of {counted(prompts, 'prompt')}{correlated}; it "
        f"trained on {counted(len(train_pairs), 'other comparison')}. "
        + (f"⚠️ {chance}" if (chance := check.chance_note()) else "Next: PPO, or DPO on the same comparisons.")
    )
    status += warning_notes([cut] if (cut := cut_ties_note(session.lm.tokenizer, train_pairs + heldout_pairs)) else [])
    return status, plot, examples, pd.DataFrame(check.table())


def ppo_inputs(form: dict, request: gr.Request | None) -> tuple[RLHFSession, PPOConfig]:
    """The visitor's RLHF session and the PPO config; a PeftlabError before the reward model has trained or for a
    setting PPO refuses (also checked as the button is pressed, `heavy_job`)."""
    session = _session(request)
    session.need("reward")
    config = config_from_form(PPOConfig, form, prefix="ppo_", seed=_seed(form))
    check_width(session.lm.model, config.lora_r, "PPO LoRA rank")
    return session, config


@user_errors
def run_ppo_stage(request: gr.Request, progress=gr.Progress(), **form):
    session, config = ppo_inputs(form, request)
    paced = _paced(request, "ppo", form, (session.lm.name,), config, counted(config.steps, "PPO step"))
    if message := paced.refusal():
        yield message, gr.skip(), gr.skip()
        return
    kept = replace(session)
    history, samples = [], []
    with job(request, JOB) as (_, stop), closing(ppo_in_chunks(session, form["labeler"], config, stop)) as stages:
        progress(0, desc=f"PPO step 1/{config.steps}")
        yield f"PPO step 1/{config.steps}: sampling responses, scoring them, optimising…", gr.skip(), gr.skip()
        for item in stages:
            if isinstance(item, PPOResult):
                continue  # the last item: the loop ends with the (last) GPU call
            if message := paced.observe(item):
                stages.close()  # ended before the message shows: the button then takes the second press at once
                session.restore(kept)
                yield message, gr.skip(), gr.skip()
                return
            history.append({k: v for k, v in asdict(item).items() if k != "sample"})
            samples.insert(0, {"step": item.step, "prompt": item.sample[0], "response": item.sample[1]})
            progress(item.step / config.steps, desc=f"PPO step {item.step}/{config.steps}")
            yield (
                f"PPO step {item.step}/{config.steps}: reward {item.mean_reward:+.2f}, KL {item.mean_kl:.2f} nats"
                f"{paced.time_left(item)}",
                metric_panels(pd.DataFrame(history), "step", PPO_PANELS, "PPO", SHARE_PANELS),
                pd.DataFrame(samples),
            )
        reason = stop.reason or "it was stopped"
    if not (session.ppo and session.ppo.history):  # the policy is the SFT model's: nothing to compare with it
        session.restore(kept)
        yield _untrained("PPO", reason), gr.skip(), gr.skip()
        return
    result = session.ppo
    SESSIONS.get(request).values[NEW_POLICY] = True  # the evaluation on the page compared the policy it replaced
    done = (
        f"PPO stopped after {len(result.history)} of {counted(config.steps, 'step')} because {reason}; the policy "
        "so far is kept"
        if len(result.history) < config.steps
        else "PPO done"
    )
    yield (
        f"{done} ({result.seconds:.0f} s). Compare the SFT and PPO policies below.",
        metric_panels(pd.DataFrame(history), "step", PPO_PANELS, "PPO", SHARE_PANELS) if history else None,
        pd.DataFrame(samples),
    )


def _untrained(stage: str, reason: str) -> str:
    """The status of a stage stopped before its first step, which keeps nothing: the session is as it was before
    the press ("the policy so far is kept" invited comparing the SFT model with itself)."""
    return f"{stage} stopped before its first step because {reason}: nothing was trained, and every stage is as it was."


def dpo_inputs(form: dict, request: gr.Request | None) -> tuple[RLHFSession, DPOConfig]:
    """The visitor's RLHF session and the DPO config; a PeftlabError for a setting DPO refuses or before SFT and the
    reward model have run (also checked as the button is pressed, `heavy_job`)."""
    session = _session(request)
    config = config_from_form(DPOConfig, form, prefix="dpo_", seed=_seed(form))
    session.check_dpo()  # at the press: the reward model's missing comparisons were refused after the queue's wait
    check_width(session.lm.model, config.lora_r, "DPO LoRA rank")
    return session, config


@user_errors
def run_dpo_stage(request: gr.Request, progress=gr.Progress(), **form):
    session, config = dpo_inputs(form, request)
    paced = _paced(request, "dpo", form, (session.lm.name,), config, counted(config.steps, "DPO step"))
    if message := paced.refusal():
        yield message, gr.skip()
        return
    kept = replace(session)
    history = []
    # closed on every way out: DPO trains in a thread of its own, which a stage left for its estimate must end
    with (
        job(request, JOB) as (_, stop),
        closing(
            session_call(session, stage, "run_dpo", config, stop=stop, **_sized("DPO", session.lm.name, config, paced))
        ) as stages,
    ):
        progress(0, desc=f"DPO step 1/{config.steps}")
        yield f"DPO step 1/{config.steps}: setting up the trainer and the reference model…", gr.skip()
        for item in stages:
            if isinstance(item, DPOResult):
                continue  # the last item: the loop ends with the GPU call
            if message := paced.observe(item):
                stages.close()  # ended before the message shows: the button then takes the second press at once
                session.restore(kept)
                yield message, gr.skip()
                return
            history.append(asdict(item))
            progress(item.step / config.steps, desc=f"DPO step {item.step}/{config.steps}")
            line = (
                f"DPO step {item.step}/{config.steps}: loss {item.loss:.3f}, "
                f"implicit reward margin {item.reward_margin:+.3f}{paced.time_left(item)}"
            )
            plotted = item.step % 5 == 0 or item.step == config.steps
            yield (
                line,
                metric_panels(pd.DataFrame(history), "step", DPO_PANELS, "DPO", SHARE_PANELS) if plotted else gr.skip(),
            )
        reason = stop.reason or "it was stopped"
    if not (session.dpo and session.dpo.history):
        session.restore(kept)
        yield _untrained("DPO", reason), gr.skip()
        return
    result = session.dpo
    SESSIONS.get(request).values[NEW_POLICY] = True
    done = (
        f"DPO stopped after {len(result.history)} of {counted(config.steps, 'step')} because {reason}; the policy "
        "so far is kept"
        if result.stopped
        else "DPO done"
    )
    yield (
        # "Compare it with SFT and PPO" was said with no PPO run
        f"{done} ({result.seconds:.0f} s, {counted(result.comparisons, 'comparison')}). Compare it with SFT"
        + (" and PPO" if session.ppo else "")
        + " below.",
        metric_panels(pd.DataFrame(history), "step", DPO_PANELS, "DPO", SHARE_PANELS) if history else None,
    )


def evaluation_inputs(form: dict, request: gr.Request | None) -> tuple[RLHFSession, int, int]:
    """The visitor's RLHF session, the number of held-out prompts and the seed; a PeftlabError before a policy is
    trained, for an emptied box or for more prompts than are held out (also checked as the button is pressed,
    `heavy_job`)."""
    if form["prompts"] is None:
        raise PeftlabError("Held-out prompts is empty; it must be at least 1.")
    prompts, seed = int(form["prompts"]), _seed(form)
    current_caps().check("test_texts", prompts, "Held-out prompts")  # an upload of 10,000 prompts holds out 2,000
    session = _session(request)
    session.check_evaluation(prompts)  # before the call: its sizing names the session's model
    return session, prompts, seed


@user_errors
def evaluate_stage(labeler_name, prompts, seed, request: gr.Request, progress=gr.Progress()):
    visitor = SESSIONS.get(request)  # closed when the visitor leaves before the evaluation ends: nothing is kept
    session, prompts, seed = evaluation_inputs({"prompts": prompts, "seed": seed}, request)
    # what the wait is for: the status showed a bare timer, where every other stage counts its steps
    models = " and ".join(["SFT", *(name.upper() for name in session.policies())])
    progress(0, desc=f"{models} answering {counted(prompts, 'held-out prompt')}")
    with job(request, JOB) as (_, stop):
        comparison, *_ = session_call(
            session,
            stage,
            "evaluate",
            labeler_name,
            prompts,
            seed,
            stop=stop,
            kind=f"rlhf-evaluate:{session.lm.name}",
            units=prompts,
            what=f"Answering {prompts} held-out prompts",
            shorter="answer fewer prompts",
        )
    if isinstance(comparison, Sampled):  # stopped between batches of answers
        return (
            f"{stopped_note(stop)} The models had given {comparison.done} of their {comparison.total} answers; "
            "nothing was kept.",
            None,
            None,
            None,
        )
    seconds = route_seconds(*(stage.seconds if stage else 0.0 for stage in (session.reward, session.ppo, session.dpo)))
    ptx_coef = session.ppo.ptx_coef if session.ppo else 0.0
    # the stages' own settings (SFT's, the comparisons', the reward model's, the route's): two PPO runs of other
    # settings were stored alike, and the Compare tab averaged them as repeats of one
    settings = {**session.settings, "seed": seed, "eval_samples": 1}  # as the command line names them
    # the policies answered in a GPU call on ZeroGPU, where the app's own copy of the model is on the CPU
    device = "cuda" if in_app_process_on_zero_gpu() else str(session.lm.device)
    rows = comparison.result_rows(session.lm.name, settings, seconds, device, methods=route_methods(ptx_coef))
    keep_results(visitor, rows)
    s = comparison.summary
    routes = comparison.routes
    # each number named: "SFT +0.514 (+0.32)" left the bracket unexplained
    parts = [f"SFT **{s['sft_mean_score']:+.3f}** (reward model {s['sft_mean_reward']:+.2f})"] + [
        f"{route.upper()} **{s[f'{route}_mean_score']:+.3f}** (reward model {s[f'{route}_mean_reward']:+.2f}), "
        f"KL to SFT {s[f'{route}_mean_kl']:.2f} nats per response"
        for route in routes
    ]
    held_out = counted(s["prompts"], "held-out prompt")
    status = f"On {held_out}, mean {s['labeler']} score: " + "; ".join(parts) + "."
    if note := comparison.kl_note():
        status += f" {note}"
    table = comparison.table.rename(columns=side_by_side_header)
    # one number format per kind of column, as the Compare tab writes them ("0", "-0.572" and "-0.00677" stood in
    # one column)
    formats = {"score": "{:+.3f}", "reward": "{:+.2f}", "KL": "{:.2f}"}
    shown = table.assign(
        **{
            column: table[column].map(lambda v, f=formats[kind]: "" if pd.isna(v) else f.format(v))
            for column in table.columns
            if (kind := column.split()[-1]) in formats
        }
    )
    scores = score_comparison(
        table,
        [side_by_side_header(f"{r}_labeler_score") for r in ("sft", *routes)],
        f"{s['labeler']} score",
    )
    return (
        status,
        shown,
        scores,
        score_kl_frontier(s, routes, f"{s['labeler']} score"),
    )


def side_by_side_header(column: str) -> str:
    """A side-by-side column as people read it: "ppo_labeler_score" -> "PPO score", "sft_response" -> "SFT answer"."""
    route, _, what = column.partition("_")
    words = {"response": "answer", "labeler_score": "score", "reward": "reward", "kl": "KL"}
    return f"{route.upper()} {words[what]}" if what in words else column


def stages_left(request: gr.Request, outputs: dict[str, list]) -> list:
    """For each later stage (`outputs`: "reward", "ppo", "dpo", "evaluation", each with its status line first), its
    outputs emptied when the session no longer holds its result: a new SFT model drops the reward model, PPO and
    DPO, a new reward model drops PPO and DPO (`RLHFSession`), and their "done" lines and plots spoke of results
    that were gone; a new PPO or DPO policy makes the evaluation, which compared the one before, go. Stages still
    held keep their outputs (a refused or failed press changes nothing)."""
    session = _session(request)
    held = {"reward": session.reward, "ppo": session.ppo, "dpo": session.dpo}
    replaced = SESSIONS.get(request).values.pop(NEW_POLICY, False)  # the evaluation showed the policy before it
    held["evaluation"] = None if replaced else session.ppo or session.dpo
    return [
        value
        for stage, components in outputs.items()
        for value in ([gr.skip()] * len(components) if held[stage] is not None else [""] + [None] * len(components[1:]))
    ]


@user_errors
def download_stage(stage, request: gr.Request):
    session = _idle_session(request)
    session.need(DOWNLOADS[stage])
    path = SESSIONS.get(request).download(session.lm.name, "rlhf", stage, suffix="zip")
    saved = call_on_gpu(
        saved_zip, session, DOWNLOADS[stage], str(path), kind=f"rlhf-save:{session.lm.name}", what="Saving the weights"
    )
    return saved, ""  # the line held a refusal's sentence


def samples_table() -> gr.Dataframe:
    """The samples a stage draws while it trains: step, prompt and the response, which wraps in most of the width."""
    return gr.Dataframe(
        label="Samples while training",
        headers=["step", "prompt", "response"],
        column_widths=["56px", "35%", "50%"],  # 8 % of a half-width table wrapped "step" as "ste / p"
        wrap=True,
        max_chars=TEXT_CELL_CHARS,
        interactive=False,
        max_height=300,
    )


def comparisons_source(path, source: str):
    """ "Comparisons from" as a comparisons file is dropped or removed: a dropped file is what the reward model should
    learn from (the radio stayed on the simulated labeler, far below the upload, and the file went unused)."""
    if path:
        return UPLOADED
    return SIMULATED if source == UPLOADED else gr.skip()
