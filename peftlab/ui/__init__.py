"""The Gradio app: one tab per method, each a build_*() wiring components to library calls."""

from __future__ import annotations

import gradio as gr

from peftlab.serving import current_caps, public_mode
from peftlab.ui.autoprompt_tab import build_autoprompt_tab
from peftlab.ui.cloze_tab import build_cloze_tab
from peftlab.ui.compare_tab import build_compare_tab
from peftlab.ui.pet_tab import build_pet_tab
from peftlab.ui.presses import LEAVE_GUARD, is_status_line
from peftlab.ui.rlhf_tab import build_rlhf_tab
from peftlab.ui.sessions import close_session
from peftlab.ui.soft_prompts_tab import build_soft_prompts_tab
from peftlab.ui.start_tab import build_start_tab

TITLE = "peftlab: prompt-based learning, side by side"
# Plotly draws its text and grid in fixed colours; in dark mode they follow the theme instead (the figures'
# backgrounds are transparent, `peftlab.plots.TEMPLATE`). Plotly writes inline styles, hence !important.
CSS = """
.dark .js-plotly-plot :is(.infolayer, .xaxislayer-above, .yaxislayer-above, .annotation, .colorbar) text,
.dark .js-plotly-plot text.bartext-outside {
    fill: var(--body-text-color) !important;
}
.dark .js-plotly-plot :is(.gridlayer, .zerolinelayer) path { stroke: var(--border-color-primary) !important; }
/* above gradio's labels (--layer-4), which drew over the buttons, below its tooltips and menus (--layer-5, -top) */
.actions { position: sticky; bottom: 0; z-index: 45; padding: 8px 0; background: var(--body-background-fill); }
/* a box focused (a tab, a click) is scrolled above the pinned row, not under it: typing went into a hidden box */
html { scroll-padding-bottom: 140px; }
/* on a phone the pinned row took a third of the screen, a button per line: they share one, the boxes lose padding */
@media (max-width: 640px) {
    .actions { padding: 4px 0; gap: 6px !important; }
    .actions > button {
        flex: 1 1 auto !important; min-width: 0 !important;
        padding: 6px 4px !important; font-size: var(--text-md) !important;
    }
    .actions > .form { flex-basis: 100% !important; }
    .actions .block.padded { padding: 4px 8px !important; }
}
.gradio-container { overflow: clip !important; }  /* clips like gradio's "hidden" without trapping sticky rows */
/* a status line (presses.status_line) keeps its text readable beside its progress and "Error" badge, at its right */
.block.status-line { min-height: 40px; }
.block.status-line > .wrap.center { align-items: flex-end; background: transparent; }
.block.status-line > .wrap.center .error { margin-right: 36px; }
/* ... and its sentence wraps before the badge and the clear button (on a phone they hid half of it), and goes under
   a progress bar, not behind it */
.block.status-line:has(> .wrap.center .error) > [data-testid="markdown-wrapper"] { padding-right: 150px; }
.block.status-line > .wrap.center:has(.progress-level) { position: relative !important; }
"""
# Gradio's own copies of served files (uploads, anything outside a session folder): removed after an hour.
DELETE_CACHE = (600, 3600)


def launch_options() -> dict:
    """What `launch()` needs besides host and port: the upload size limit of the current caps, the app's CSS, and
    the script that asks before a page with finished work is left (`presses.LEAVE_GUARD`)."""
    return dict(max_file_size=int(current_caps().upload_mb * 2**20), css=CSS, head=LEAVE_GUARD)


def build_app() -> gr.Blocks:
    """The app: one tab per method, heavy jobs in one queue sized by the hardware, sessions cleaned when they end."""
    with gr.Blocks(title=TITLE, delete_cache=DELETE_CACHE) as app:
        gr.Markdown(f"# {TITLE}")
        with gr.Tabs(overflow_behavior="wrap") as tabs:  # every tab reachable on a phone, in two rows
            with gr.Tab("Start", id="start", elem_id="tab-start"):
                build_start_tab(tabs, compare_tab_id="compare")
            with gr.Tab("Cloze", id="cloze", elem_id="tab-cloze"):
                cloze = build_cloze_tab()
            with gr.Tab("AutoPrompt", id="autoprompt", elem_id="tab-autoprompt"):
                build_autoprompt_tab(cloze, tabs, cloze_tab_id="cloze")
            with gr.Tab("Soft prompts", id="soft-prompts", elem_id="tab-soft-prompts"):
                build_soft_prompts_tab()
            with gr.Tab("PET", id="pet", elem_id="tab-pet"):
                build_pet_tab()
            with gr.Tab("RLHF", id="rlhf", elem_id="tab-rlhf"):
                build_rlhf_tab()
            with gr.Tab("Compare", id="compare", elem_id="tab-compare") as compare_tab:
                build_compare_tab(compare_tab)
        if public_mode():
            caps = current_caps()
            gr.Markdown(
                f"This is a public Space: jobs are capped (the limits are shown next to the inputs) and stop "
                f"by themselves after {caps.job_minutes:g} minutes, keeping what they finished."
            )
        app.unload(close_session)
    spare_outputs_from_badges(app)
    app.queue(default_concurrency_limit=1)  # each event names its queue (heavy, light or none); this is the fallback
    return app


def spare_outputs_from_badges(app: gr.Blocks) -> None:
    """Progress and "Error" badges only where they help. An event with a status line among its outputs
    (`presses.status_line`) shows them on it alone: a failed run leaves the results, curves and files of the run
    before readable instead of each under a badge (the toast says what failed). Otherwise they go on what the event
    shows, never over a box a person fills in: an event whose outputs include some event's input (the template box
    a task suggestion fills, the cloze boxes a found trigger is sent to) shows them on its other outputs or nowhere,
    and its error is the toast alone, so the box stays readable and editable to fix what the toast says."""
    edited = {id(component) for fn in app.fns.values() for component in fn.inputs}
    for fn in app.fns.values():
        if fn.show_progress_on is not None:
            continue
        shown = [component for component in fn.outputs if id(component) not in edited]
        statuses = [component for component in shown if is_status_line(component)]
        if statuses:
            fn.show_progress_on = statuses
        elif len(shown) < len(fn.outputs):
            if shown:
                fn.show_progress_on = shown
            else:
                fn.show_progress = "hidden"
