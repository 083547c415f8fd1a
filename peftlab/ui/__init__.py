"""The Gradio app: one tab per method, each a build_*() wiring components to library calls."""

from __future__ import annotations

import gradio as gr

from peftlab.ui.cloze_tab import build_cloze_tab

TITLE = "peftlab: prompt-based learning, side by side"


def build_app() -> gr.Blocks:
    with gr.Blocks(title=TITLE) as app:
        gr.Markdown(f"# {TITLE}")
        with gr.Tab("Cloze"):
            build_cloze_tab()
    app.queue(default_concurrency_limit=1)  # one model job at a time: a CPU has no room for two
    return app
