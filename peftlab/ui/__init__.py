"""The Gradio app: one tab per method, each a build_*() wiring components to library calls."""

from __future__ import annotations

import gradio as gr

from peftlab.ui.autoprompt_tab import build_autoprompt_tab
from peftlab.ui.cloze_tab import build_cloze_tab
from peftlab.ui.rlhf_tab import build_rlhf_tab
from peftlab.ui.soft_prompts_tab import build_soft_prompts_tab

TITLE = "peftlab: prompt-based learning, side by side"


def build_app() -> gr.Blocks:
    with gr.Blocks(title=TITLE) as app:
        gr.Markdown(f"# {TITLE}")
        with gr.Tabs() as tabs:
            with gr.Tab("Cloze", id="cloze"):
                cloze = build_cloze_tab()
            with gr.Tab("AutoPrompt", id="autoprompt"):
                build_autoprompt_tab(cloze, tabs, cloze_tab_id="cloze")
            with gr.Tab("Soft prompts", id="soft-prompts"):
                build_soft_prompts_tab()
            with gr.Tab("RLHF", id="rlhf"):
                build_rlhf_tab()
    app.queue(default_concurrency_limit=1)  # one model job at a time: a CPU has no room for two
    return app
