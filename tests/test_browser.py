"""The launched app in headless Chromium: type a text on the Cloze tab, classify it, see the probability chart.

Needs Debian's `chromium` (`apt-get install chromium`; `playwright install` cannot download browsers here).
Without it the test is skipped, unless PEFTLAB_REQUIRE_BROWSER=1 (CI sets it), where it fails instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from tests.app_server import FIRST_CALL_TIMEOUT_S, running_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TEXT = "A wonderful, moving and brilliantly acted film; I loved every minute of it."
LABELS = ["negative", "positive"]


def find_chromium() -> tuple[str | None, str]:
    """(path to Chromium, "") when the browser test can run, else (None, why not)."""
    path = CHROMIUM if Path(CHROMIUM).is_file() else shutil.which("chromium")
    if not path:
        return None, f"Chromium is not installed (no {CHROMIUM} and no `chromium` on PATH)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return None, "The `playwright` Python package is not installed (pip install -r requirements-dev.txt)"
    return path, ""


def require_browser(reason: str) -> None:
    """Fail when CI requires the browser test, skip (saying how to enable it) otherwise.

    Called from the test itself rather than a fixture, so that a required-but-missing browser reports
    FAILED (not a setup ERROR).
    """
    if not reason:
        return
    if os.environ.get("PEFTLAB_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason}, but PEFTLAB_REQUIRE_BROWSER=1 requires the browser test to run.", pytrace=False)
    pytest.skip(
        f"{reason}; install it with `apt-get install chromium` to run this test "
        "(CI sets PEFTLAB_REQUIRE_BROWSER=1 so that a missing browser fails there)."
    )


@pytest.fixture(scope="module")
def chromium() -> tuple[str | None, str]:
    return find_chromium()


@pytest.fixture(scope="module")
def app_url(chromium):
    if chromium[0] is None:  # no app launch for a test that will not run
        yield None
        return
    # Two heavy jobs at once, as on a GPU Space, so the two-page test really runs them side by side.
    previous = os.environ.get("PEFTLAB_HEAVY_JOBS")
    os.environ["PEFTLAB_HEAVY_JOBS"] = "2"
    try:
        with running_app() as url:
            yield url
    finally:
        if previous is None:
            os.environ.pop("PEFTLAB_HEAVY_JOBS")
        else:
            os.environ["PEFTLAB_HEAVY_JOBS"] = previous


@pytest.fixture(scope="module")
def browser(chromium):
    path, _ = chromium
    if path is None:
        yield None
        return
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def enter(box, value: str) -> None:
    """Types `value` into `box` and commits it (Tab) before anything reads it, typing again if the box was drawn over
    it: inputs in an accordion mount when it first opens, and a value typed while they mount is lost."""
    from playwright.sync_api import expect

    for _ in range(3):
        box.fill(value)
        box.press("Tab")
        try:
            expect(box).to_have_value(value, timeout=2_000)
            return
        except AssertionError:
            continue
    expect(box).to_have_value(value)


@contextlib.contextmanager
def opened(browser, url: str, tab: str | None = None, width: int = 1280, height: int = 800) -> Iterator:
    """A new page of the app at `url`, `width` x `height` pixels, on `tab` (the app opens on the Start tab); closed
    when the block ends."""
    page = browser.new_page(viewport={"width": width, "height": height})
    try:
        # Not "networkidle": a Blocks with gr.State keeps a heartbeat stream open, so the network never idles.
        page.goto(url, wait_until="domcontentloaded", timeout=60_000)
        if tab is not None:
            page.get_by_role("tab", name=tab).click()
        yield page
    finally:
        page.close()


def test_classify_one_text_shows_the_label_probability_chart_and_a_failed_press_empties_it(
    chromium, browser, app_url, tmp_path
):
    require_browser(chromium[1])
    from playwright.sync_api import expect

    with opened(browser, app_url, "Cloze", height=1400) as page:
        textbox = page.get_by_label("Try one text")
        expect(textbox).to_be_visible(timeout=30_000)
        textbox.fill(TEXT)
        page.get_by_role("button", name="Classify", exact=True).click()

        # Plotly draws each bar's text ("negative 2.8%") as an SVG <text> inside the chart.
        chart = page.locator(".js-plotly-plot").filter(has=page.locator("g.barlayer"))
        expect(chart).to_be_visible(timeout=FIRST_CALL_TIMEOUT_S * 1000)
        for label in LABELS:
            expect(page.get_by_text(re.compile(rf"^{label} \d+(\.\d)?%$"))).to_be_visible(timeout=30_000)

        texts = chart.locator("text.bartext").all_text_contents()  # SVG text has no innerText
        assert sorted(t.split()[0] for t in texts) == LABELS, texts
        percents = {t.split()[0]: float(t.split()[1].rstrip("%")) for t in texts}
        assert sum(percents.values()) == pytest.approx(100, abs=0.2), percents
        assert percents["positive"] > percents["negative"], percents

        chart.scroll_into_view_if_needed()
        screenshot = tmp_path / "cloze.png"
        page.screenshot(path=str(screenshot), full_page=True)
        print(f"screenshot: {screenshot}")
        assert screenshot.stat().st_size > 0

        # A press that fails empties the answer to the press before: no chart left as if it answered the bad template.
        page.locator("#tab-cloze").get_by_label("Template(s)").fill("Review: {text}")
        page.get_by_role("button", name="Classify", exact=True).click()
        expect(page.get_by_text("The template must contain exactly one {mask}").first).to_be_visible(timeout=30_000)
        expect(chart).to_have_count(0, timeout=10_000)
        # ... and the emptied outputs keep gradio's "Error" badge (the toast fades; the badge says what happened).
        expect(page.locator("#tab-cloze").get_by_text("Error", exact=True).first).to_be_visible()

        # Another task picked: the answer about movie reviews goes, rather than stand beside the news topics' prompt.
        page.locator("#tab-cloze").get_by_label("Template(s)").fill("Review: {text}\nSentiment:{mask}")
        page.get_by_role("button", name="Classify", exact=True).click()
        expect(chart).to_be_visible(timeout=30_000)
        # An edited verbalizer: the answer to the words before goes (its note named words no longer in the box).
        words = page.locator("#tab-cloze").get_by_label("Verbalizer")
        words.fill("negative: negative\npositive: positive")
        words.press_sequentially(", good")  # typed, as a visitor does (a fill alone is no edit to gradio)
        expect(chart).to_have_count(0, timeout=10_000)
        expect(page.locator("#cloze-verdict")).to_have_text("")
        page.get_by_role("button", name="Classify", exact=True).click()
        expect(chart).to_be_visible(timeout=30_000)
        task_box = page.locator("#tab-cloze").get_by_label("Task", exact=True)
        task_box.click()
        page.get_by_role("option", name="bbc-topic").click()
        expect(page.locator("#tab-cloze").get_by_label("Template(s)")).not_to_have_value(re.compile("Sentiment"))
        expect(chart).to_have_count(0, timeout=10_000)

        # An evaluation's press refused at once (before the queue) empties its answer too: the accuracy of the
        # press before stood under the "Error" badge as if it answered the template without {mask}.
        tab = page.locator("#tab-cloze")
        tab.get_by_label("Test texts to evaluate").fill("20")
        tab.get_by_role("button", name="Evaluate on the test split").click()
        status = tab.locator(".block.status-line")
        expect(status).to_contain_text(re.compile(r"Accuracy \d+\.\d%"), timeout=FIRST_CALL_TIMEOUT_S * 1000)
        tab.get_by_label("Template(s)").fill("Topic: {text}")
        tab.get_by_role("button", name="Evaluate on the test split").click()
        expect(page.get_by_text("The template must contain exactly one {mask}").first).to_be_visible(timeout=10_000)
        expect(status).not_to_contain_text("Accuracy", timeout=10_000)
        expect(status.get_by_text("Error", exact=True)).to_be_visible()
        # ... and the sentence stays on the line under its badge (the toast fades after 10 s)
        expect(status).to_contain_text("The template must contain exactly one {mask}", timeout=10_000)


def test_two_pages_run_different_heavy_jobs_at_once_and_each_gets_its_own_result(chromium, browser, app_url, tmp_path):
    """A Cloze evaluation and an AutoPrompt search, clicked together in two pages (two visitors), run at once
    on one cached model (the app allows two heavy jobs here); each page shows the result its job gives alone."""
    require_browser(chromium[1])
    from playwright.sync_api import expect

    from peftlab.autoprompt import AutoPromptConfig, remove_triggers, search_triggers, test_accuracy
    from peftlab.cloze import evaluate
    from peftlab.models import load_lm
    from peftlab.prompts import Prompt, Template, Verbalizer
    from peftlab.tasks import load_task
    from peftlab.ui.common import START_TEMPLATE, START_VERBALIZER

    task, lm = load_task("rt-sentiment"), load_lm("smollm2-135m")
    cloze_alone = evaluate(lm, task, START_TEMPLATE, START_VERBALIZER, limit=24).accuracy
    config = AutoPromptConfig(iterations=2, candidates=4, batch_size=8, train_size=16)
    *_, last = search_triggers(lm, task, START_VERBALIZER, config)
    verbalizer = Verbalizer.parse(START_VERBALIZER, task.label_names)
    found = Prompt(Template.parse(config.template, ["text"]), verbalizer, trigger_ids=tuple(last.best_trigger_ids))
    manual = Prompt(Template.parse(remove_triggers(config.template), ["text"]), verbalizer)
    test = task.test_subset(20)
    found_alone, manual_alone = test_accuracy(lm, found, test), test_accuracy(lm, manual, test)

    with (
        opened(browser, app_url, "Cloze", height=1400) as cloze_page,
        opened(browser, app_url, "AutoPrompt", height=1400) as search_page,
    ):
        cloze_tab = cloze_page.locator("#tab-cloze")
        expect(cloze_tab.get_by_label("Test texts to evaluate")).to_be_visible(timeout=30_000)
        enter(cloze_tab.get_by_label("Test texts to evaluate"), "24")
        search_tab = search_page.locator("#tab-autoprompt")
        for label, value in (
            ("Iterations", "2"),
            ("Candidates k", "4"),
            ("Batch size", "8"),
            ("Train size", "16"),
            ("Test texts", "20"),
        ):
            enter(search_tab.get_by_label(label, exact=True), value)
        cloze_tab.get_by_role("button", name="Evaluate on the test split").click()
        search_tab.get_by_role("button", name="Search", exact=True).click()

        expect(cloze_tab.get_by_text(re.compile(r"Accuracy \d+(\.\d)?%"))).to_be_visible(
            timeout=FIRST_CALL_TIMEOUT_S * 1000
        )
        expect(search_tab.get_by_text(re.compile(r"Test accuracy \d+(\.\d)?%"))).to_be_visible(
            timeout=FIRST_CALL_TIMEOUT_S * 1000
        )
        # The bold figure is its own element; its paragraph holds the whole summary.
        cloze_summary = (
            cloze_tab.get_by_text(re.compile(r"Accuracy \d+(\.\d)?%")).first.locator("xpath=..").text_content()
        )
        search_summary = (
            search_tab.get_by_text(re.compile(r"Test accuracy \d+(\.\d)?%")).first.locator("xpath=..").text_content()
        )
        assert f"Accuracy {cloze_alone:.1%}" in cloze_summary, cloze_summary
        assert "24 of 1000 test texts" in cloze_summary, cloze_summary
        assert (
            f"Test accuracy {found_alone:.1%} with the trigger vs {manual_alone:.1%} without (20 test texts)"
            in search_summary
        ), search_summary
        for name, page in (("two-pages-cloze", cloze_page), ("two-pages-autoprompt", search_page)):
            page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)

        # A search that fails leaves the last one's table, curve and template readable: one "Error" badge, on the
        # status line, and the toast says why.
        search_tab.get_by_label("Template with trigger slots [T]").fill("Review: {text} [T]")
        search_tab.get_by_role("button", name="Search", exact=True).click()
        expect(search_page.get_by_text("The template must contain exactly one {mask}").first).to_be_visible()
        expect(search_tab.get_by_text("Error", exact=True)).to_have_count(1)
        status_line = search_tab.locator(".status-line")
        expect(status_line.get_by_text("Error", exact=True)).to_have_count(1)
        expect(search_tab.get_by_label("Found template")).not_to_have_value("")
        search_page.screenshot(path=str(tmp_path / "two-pages-autoprompt-failed.png"), full_page=True)
        print(f"screenshots: {tmp_path}")


def test_compare_tab_runs_a_small_standard_comparison_and_shows_the_table_and_both_charts(
    chromium, browser, app_url, tmp_path, monkeypatch
):
    """Run a small standard comparison from the Compare tab, then Compare: one table line per method, with the
    accuracy the store holds, and both charts drawn."""
    require_browser(chromium[1])
    from playwright.sync_api import expect

    from peftlab.report import compare, display_table
    from peftlab.standard import STANDARD_METHODS
    from peftlab.store import ResultStore
    from peftlab.ui.compare_tab import COMPARE_WRAP
    from peftlab.ui.display import column_widths

    store = tmp_path / "results.sqlite"
    monkeypatch.setenv("PEFTLAB_RESULTS", str(store))  # this test's rows only (the app runs in this process)
    keep = ["zero-shot · mean", "lora", "head"]
    with opened(browser, app_url, "Compare", 1400, 1800) as page:
        tab = page.locator("#tab-compare")
        tab.get_by_text("Run the standard comparison: every method").click()
        expect(tab.get_by_label("K per class")).to_be_visible(timeout=30_000)
        for method in STANDARD_METHODS:
            if method not in keep:
                tab.get_by_label(method, exact=True).uncheck()
        for label, value in (
            ("K per class", "2"),
            ("Test texts", "24"),
            ("Steps", "2"),
            ("Demonstrations per class", "1"),
        ):
            enter(tab.get_by_label(label, exact=True), value)
        # A textbox's accessible name also holds its help line, so it is found by a case-sensitive part of it.
        enter(tab.get_by_label(re.compile(r"Seeds")), "13")
        run = tab.get_by_role("button", name="Run the standard comparison", exact=True)
        run.click()
        # pressed again while its job waited or ran, it hid the job's place in the queue: it is off until the end
        expect(run).to_be_disabled(timeout=10_000)
        expect(
            tab.get_by_text(
                re.compile(r"^3 runs finished in [\d.]+ (s|min) \(estimated [\d.]+ (s|min)\)\. Press Compare")
            )
        ).to_be_visible(timeout=FIRST_CALL_TIMEOUT_S * 3000)
        expect(run).to_be_enabled(timeout=10_000)

        # the tab opened again draws the comparison at once: it stood blank until Compare was pressed
        page.get_by_role("tab", name="Start").click()
        page.get_by_role("tab", name="Compare").click()
        expect(tab.get_by_role("combobox", name="Model").first).to_have_value("smollm2-135m", timeout=30_000)
        expect(tab.get_by_text(re.compile(r"rt-sentiment · smollm2-135m"))).to_be_visible(timeout=60_000)
        (comparison,) = compare(ResultStore(store).rows())
        expected = display_table(comparison.table)
        assert sorted(expected["method"]) == sorted(keep)
        table = tab.get_by_role("grid", name="One line per method (mean ± sample std over seeds)")
        for method, accuracy in zip(expected["method"], expected["accuracy"]):
            expect(table.get_by_role("row", name=re.compile(rf"^{re.escape(method)} \d"))).to_contain_text(accuracy)
        # each column as wide as its header's longest word and its cells need ("accuracy" broke as "accura / cy")
        widths = column_widths(expected, COMPARE_WRAP)
        expect(table.locator("th").first).to_have_attribute("style", re.compile(rf"width: {widths[0]}"))
        assert table.locator("th").evaluate_all("ths => ths.map(th => th.style.width)") == widths
        expect(tab.get_by_role("grid", name=re.compile("Results on other test splits"))).to_have_count(0)
        charts = tab.locator(".js-plotly-plot")
        expect(charts).to_have_count(2, timeout=30_000)
        table_values = comparison.table
        for chart, x in zip(charts.all(), (table_values["trainable_params"], table_values["seconds_mean"])):
            # One marker per method on each chart (scatter points are SVG paths in the g.points groups), but for a
            # method at 0 there (zero-shot trains nothing): a dashed line at its accuracy, named in its label.
            expect(chart.locator("g.points path")).to_have_count(int((x > 0).sum()), timeout=30_000)
        # the label's two lines (its name, then why it is a line)
        expect(charts.first.get_by_text("zero-shot · mean", exact=True)).to_have_count(1)
        expect(charts.first.get_by_text("(0 trainable parameters)", exact=True)).to_have_count(1)
        charts.first.scroll_into_view_if_needed()
        screenshot = tmp_path / "compare.png"
        page.screenshot(path=str(screenshot), full_page=True)
        print(f"screenshot: {screenshot}")
        assert screenshot.stat().st_size > 0


def test_rlhf_tab_trains_both_routes_on_a_persons_own_rankings(
    chromium, browser, app_url, tiny_causal_folder, tmp_path
):
    """A person ranks K=3 answers for two prompts on the ranking screen (one with a tie), the reward model trains on
    those comparisons alone, a short PPO and a short DPO run, and the evaluation table shows SFT, PPO and DPO."""
    require_browser(chromium[1])
    from playwright.sync_api import expect

    slow = FIRST_CALL_TIMEOUT_S * 1000
    with opened(browser, app_url, "RLHF") as page:
        tab = page.locator("#tab-rlhf")
        # a download before training: the sentence stays beside the file box, which said "Error" alone
        tab.get_by_role("button", name="Download (zip)").click()
        said = tab.locator(".block.status-line").filter(has_text="⚠️ Run step 1 (SFT) first.")
        expect(said.get_by_text("Error", exact=True)).to_have_count(1, timeout=30_000)
        model = tab.get_by_role("combobox", name="Model")
        model.fill(tiny_causal_folder)
        model.press("Enter")
        enter(tab.locator("#rlhf-sft-steps input"), "2")
        tab.get_by_role("button", name="Run SFT").click()
        expect(tab.get_by_text(re.compile(r"^SFT done"))).to_be_visible(timeout=slow)

        tab.get_by_text("Rank responses yourself").click()
        enter(tab.locator("#rlhf-rank-k input"), "3")
        for saved, ranks in enumerate(([2, 1, 3], [1, 1, 2]), 1):
            tab.get_by_role("button", name="Sample responses to rank").click()
            expect(tab.get_by_label("Response 3")).to_be_visible(timeout=slow)
            expect(tab.get_by_label("Response 4")).to_be_hidden()
            if saved == 1:  # saved with no ranks: the toast says which, and no "Error" badge covers the answers
                tab.get_by_role("button", name="Save ranking").click()
                expect(page.get_by_text("Give response 1 a rank from 1 (best) to 3.").first).to_be_visible()
                expect(tab.get_by_text("Error", exact=True)).to_have_count(1)  # one, on the status line below ...
                status_line = tab.locator(".block.status-line").filter(has_text="⚠️ Give response 1 a rank from 1")
                expect(status_line.get_by_text("Error", exact=True)).to_have_count(1)  # ... with the sentence
                expect(tab.get_by_label("Response 1")).to_be_visible()
            for number, rank in enumerate(ranks, 1):
                tab.locator("fieldset").filter(has_text=f"Rank of response {number}").get_by_label(str(rank)).check()
            tab.get_by_role("button", name="Save ranking").click()
            expect(tab.get_by_text(re.compile(rf"^{saved} ranking{'s' * (saved > 1)} saved"))).to_be_visible()
        # 3 pairs from the strict order, 2 from the one with a tie (the tied answers make none)
        expect(tab.get_by_text("5 comparisons on 2 prompts for the reward model")).to_be_visible()
        page.screenshot(path=str(tmp_path / "rlhf-ranking.png"), full_page=True)

        tab.get_by_label("my rankings").check()
        enter(tab.locator("#rlhf-rm-steps input"), "3")
        tab.get_by_role("button", name="Train the reward model").click()
        expect(tab.get_by_text(re.compile(r"^Reward model: held-out pair accuracy"))).to_be_visible(timeout=slow)
        enter(tab.locator("#rlhf-ppo-steps input"), "2")
        tab.get_by_role("button", name="Run PPO").click()
        expect(tab.get_by_text(re.compile(r"^PPO done"))).to_be_visible(timeout=slow)
        enter(tab.locator("#rlhf-dpo-steps input"), "2")
        tab.get_by_role("button", name="Run DPO").click()
        expect(tab.get_by_text(re.compile(r"^DPO done .*\d+ comparisons"))).to_be_visible(timeout=slow)

        enter(tab.get_by_label("Held-out prompts"), "3")
        tab.get_by_role("button", name="Compare", exact=True).click()
        evaluated = tab.get_by_text(re.compile(r"^On 3 held-out prompts, mean vader-positive score"))
        expect(evaluated).to_be_visible(timeout=slow)
        table = tab.get_by_role("grid", name="Side by side")
        for column in ("SFT answer", "PPO answer", "DPO answer", "PPO KL"):
            expect(table.get_by_role("columnheader", name=column)).to_have_count(1)
        expect(table.get_by_role("row")).to_have_count(4)  # the header and one row per held-out prompt
        page.screenshot(path=str(tmp_path / "rlhf-evaluation.png"), full_page=True)
        print(f"screenshots: {tmp_path}")


# Each tab and the button it exists for: in sight on the first screen, on a laptop and on a phone.
PRIMARY_ACTIONS = {
    "Start": "1. Classify this review",
    "Cloze": "Classify",
    "AutoPrompt": "Search",
    "Soft prompts": "Train and compare",
    "PET": "Run PET",
    "RLHF": "Run SFT",
    "Compare": "Compare",
}
# Screenshots of every tab at both widths and themes, kept after the run (CI keeps its clone's folder).
SCREENSHOTS = Path(os.environ.get("PEFTLAB_SCREENSHOTS", Path(__file__).resolve().parent.parent / "artifacts"))


# What is drawn on top at points across an element (a 9 x 3 grid inside it) where that is not the element itself
COVERED_POINTS = """(element) => {
    const box = element.getBoundingClientRect(), found = [];
    for (let i = 1; i <= 9; i++) for (let j = 1; j <= 3; j++) {
        const top = document.elementFromPoint(box.left + box.width * i / 10, box.top + box.height * j / 4);
        if (top && !element.contains(top)) found.push(top.tagName + ": " + (top.textContent || "").trim());
    }
    return [...new Set(found)];
}"""


@pytest.mark.parametrize("theme", ["light", "dark"])
@pytest.mark.parametrize("width", [1280, 400])
def test_every_tab_is_reachable_with_its_primary_action_in_sight(chromium, browser, app_url, width, theme):
    """No tab hides behind a menu at 400 px, each tab's primary button is inside the 800 px high window without
    scrolling, and no number box starts outside its range (the PET tab's empty "iPET generations" once showed 0
    under its minimum of 1, so Run PET failed on the defaults); a screenshot of every tab is kept."""
    require_browser(chromium[1])
    from playwright.sync_api import expect

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with opened(browser, f"{app_url}?__theme={theme}", width=width) as page:
        for tab, button in PRIMARY_ACTIONS.items():
            tab_button = page.get_by_role("tab", name=tab)
            expect(tab_button).to_be_visible(timeout=30_000)  # in the tab bar itself, not an overflow menu
            tab_button.click()
            panel = page.locator(f"#tab-{tab.lower().replace(' ', '-')}")
            primary = panel.get_by_role("button", name=button, exact=True)
            expect(primary).to_be_in_viewport(timeout=30_000)
            # nothing is drawn over it: gradio's labels of the settings scrolled under a sticky action bar drew over
            # Run PET and Stop
            covered = primary.evaluate(COVERED_POINTS)
            assert not covered, f"{tab}: {button!r} is covered by {covered}"
            # ... and the pinned row leaves the form most of a phone's window (a third went, a button per line)
            for row in panel.locator(".actions:visible").all():  # the Start tab has none
                pinned = row.bounding_box()["height"]
                assert pinned < (0.2 if width < 640 else 0.3) * 800, f"{tab}: the pinned row is {pinned} px high"
            out_of_range = panel.locator("input[type=number]:invalid")
            assert out_of_range.count() == 0, [box.get_attribute("aria-label") for box in out_of_range.all()]
            page.screenshot(path=str(SCREENSHOTS / f"{tab.lower().replace(' ', '-')}-{width}-{theme}.png"))
            # a box focused by a click or Tab scrolls above the pinned row: typing went into "Test texts" hidden
            # under AutoPrompt's Search button (the app's scroll-padding)
            for box in panel.locator("input[type=number]:visible, textarea:visible").all():
                box.evaluate("element => element.focus()")
                hidden = box.evaluate(COVERED_POINTS)
                assert not hidden, f"{tab}: {box.get_attribute('aria-label')!r}, focused, is covered by {hidden}"
            page.evaluate("window.scrollTo(0, 0)")


def test_start_panel_gives_a_result_in_one_click_and_its_chart_follows_the_dark_theme(chromium, browser, app_url):
    require_browser(chromium[1])
    from playwright.sync_api import expect

    with opened(browser, f"{app_url}?__theme=dark") as page:
        tab = page.locator("#tab-start")
        tab.get_by_role("button", name="1. Classify this review").click()
        expect(tab.get_by_text(re.compile(r"^positive with probability \d+%\.$"))).to_be_visible(
            timeout=FIRST_CALL_TIMEOUT_S * 1000
        )
        chart = tab.locator(".js-plotly-plot")
        expect(chart.locator("text.gtitle")).to_have_count(1, timeout=30_000)
        # plotly's own title colour is dark grey; in dark mode the app's CSS gives it the page's text colour
        title = chart.locator("text.gtitle").evaluate("e => getComputedStyle(e).fill")
        page_text = page.evaluate("() => getComputedStyle(document.querySelector('.gradio-container')).color")
        assert title == page_text and title != "rgb(42, 63, 95)", (title, page_text)
        # plotly draws a transparent background as fill-opacity 0: the page's dark shows through
        background = chart.locator("rect.bg").first.evaluate("e => getComputedStyle(e).fillOpacity")
        assert background == "0", background
        page.screenshot(path=str(SCREENSHOTS / "start-classified-1280-dark.png"))


def test_a_long_grid_shows_its_estimate_before_it_starts(chromium, browser, app_url, monkeypatch):
    """20,000 steps: the first press only measures and shows the expected time; nothing trains until a second. A
    new task empties what the tab showed."""
    require_browser(chromium[1])
    from playwright.sync_api import expect

    from peftlab.ui.sessions import SESSIONS

    monkeypatch.setattr("peftlab.ui.estimates.CONFIRM_ABOVE_S", 60.0)  # the app runs in this process
    with opened(browser, app_url, "Soft prompts") as page:
        tab = page.locator("#tab-soft-prompts")
        enter(tab.get_by_label("Steps", exact=True), "20000")
        tab.get_by_role("button", name="Train and compare").click()
        estimate = tab.get_by_text(re.compile(r"training runs .*: about [\d.]+ (min|h|days) on this machine"))
        expect(estimate).to_be_visible(timeout=FIRST_CALL_TIMEOUT_S * 1000)
        expect(tab.get_by_text("Press the button again to start")).to_be_visible()
        assert not any(session.running for session in SESSIONS._sessions.values())  # nothing is training
        # Another task picked: what the tab showed was about the task before (a grid of movie reviews stood beside
        # the Error of an upload it never saw)
        tab.get_by_label("Task", exact=True).click()
        page.get_by_role("option", name="bbc-topic").click()
        expect(tab.get_by_text("Press the button again to start")).to_have_count(0, timeout=10_000)


def test_a_press_refused_by_the_job_itself_gives_its_button_back_and_says_why(chromium, browser, app_url):
    """BitFit on a model without bias terms is refused once the job has the model, after the press's look: the
    button stayed disabled until a reload (gradio runs no `.then` after a failure), which ends the session, and
    the status line said "Error" alone."""
    require_browser(chromium[1])
    from playwright.sync_api import expect

    with opened(browser, app_url, "Soft prompts", height=1400) as page:
        tab = page.locator("#tab-soft-prompts")
        for method in ("prompt-tuning", "lora", "head", "bitfit"):
            tab.get_by_label(method, exact=True).click()  # the defaults off, BitFit on
        enter(tab.get_by_label("Steps", exact=True), "2")
        enter(tab.get_by_label("K per class").first, "4")  # the grid's, above the sweep's
        enter(tab.get_by_label("Test texts").first, "4")
        button = tab.get_by_role("button", name="Train and compare")
        button.click()
        status = tab.locator(".block.status-line").first
        expect(status).to_contain_text("⚠️ BitFit trains only bias terms", timeout=FIRST_CALL_TIMEOUT_S * 1000)
        expect(status.get_by_text("Error", exact=True)).to_be_visible()
        expect(button).to_be_enabled(timeout=10_000)


def test_a_classify_refused_before_training_leaves_no_error_on_the_method_trained_next(chromium, browser, app_url):
    """Classify and Download pressed before any training were refused with gradio's "Error" badge on the chart and
    the file, away from the sentence; the badge stayed there after a method was trained and picked, as if it had
    failed."""
    require_browser(chromium[1])
    from playwright.sync_api import expect

    with opened(browser, app_url, "Soft prompts", height=1400) as page:
        tab = page.locator("#tab-soft-prompts")
        tab.get_by_role("button", name="Classify", exact=True).click()
        nothing = (
            "Nothing is trained yet: train one in this tab first, or load one with 'Load a saved method (zip)' (Soft "
            "prompts tab)."
        )
        expect(page.get_by_text(nothing).first).to_be_visible(timeout=30_000)
        tab.get_by_role("button", name="Download the trained method (zip)").click()
        errors = tab.get_by_text("Error", exact=True)
        said = tab.locator(".block.status-line").filter(has_text=f"⚠️ {nothing}")
        expect(said).to_have_count(1)  # the sentence, after the toast has faded, ...
        # ... under the one badge of both presses: the chart's and the file's stood apart from it, out of its sight
        expect(said.get_by_text("Error", exact=True)).to_have_count(1, timeout=10_000)
        expect(errors).to_have_count(1)

        for method in ("prompt-tuning", "lora"):
            tab.get_by_label(method, exact=True).click()  # the head alone: the quickest to train
        enter(tab.get_by_label("Steps", exact=True), "2")
        enter(tab.get_by_label("K per class").first, "4")
        enter(tab.get_by_label("Test texts").first, "4")
        tab.get_by_role("button", name="Train and compare").click()
        # the whole grid (3 seeds): a run still training when the test ends aborts the process at its exit
        expect(tab.get_by_text(re.compile(r"3/3 runs finished"))).to_be_visible(timeout=FIRST_CALL_TIMEOUT_S * 1000)
        expect(tab.get_by_label("Trained method")).to_have_value(re.compile(r"^head"))
        expect(errors).to_have_count(0, timeout=10_000)
        expect(said).to_have_count(0)
        tab.get_by_role("button", name="Classify", exact=True).click()
        expect(tab.get_by_text(re.compile(r"^(negative|positive) \d+(\.\d)?%$")).first).to_be_visible(timeout=60_000)


def test_the_errors_table_shows_gold_and_predicted_in_sight(chromium, browser, app_url):
    require_browser(chromium[1])
    from playwright.sync_api import expect

    with opened(browser, app_url, "Cloze") as page:
        tab = page.locator("#tab-cloze")
        enter(tab.get_by_label("Test texts to evaluate"), "40")
        tab.get_by_role("button", name="Evaluate on the test split").click()
        expect(tab.get_by_text(re.compile(r"Accuracy \d+(\.\d)?%"))).to_be_visible(timeout=FIRST_CALL_TIMEOUT_S * 1000)
        table = tab.get_by_role("grid", name="Most confident errors")
        table.scroll_into_view_if_needed()
        for column in ("gold", "predicted", "confidence"):
            header = table.get_by_role("columnheader", name=column)
            expect(header).to_be_in_viewport()  # in the window, with no sideways scrolling of the table
        expect(table.get_by_role("row").nth(1)).to_contain_text(re.compile(r"(negative|positive).*\d+\.\d%"))
        page.screenshot(path=str(SCREENSHOTS / "cloze-errors-1280-light.png"))


def test_a_refused_press_is_told_at_once_and_a_page_with_finished_work_asks_before_it_is_left(
    chromium, browser, app_url
):
    """A PET press with K 0 was refused only when its turn in the queue came (after 6 minutes behind another
    visitor); now at once, with the job's "Error" badge on its status line. A reload ended the session and lost its
    trained models without a word; now, once a job has finished on the page, the browser asks first."""
    require_browser(chromium[1])
    from playwright.sync_api import expect

    dialogs = []
    with opened(browser, app_url, "PET", height=1400) as page:
        page.on("dialog", lambda dialog: (dialogs.append(dialog.type), dialog.accept()))
        pet = page.locator("#tab-pet")
        enter(pet.get_by_label("K per class"), "0")
        pet.get_by_role("button", name="Run PET").click()
        expect(page.get_by_text("K per class must be at least 1, not 0.").first).to_be_visible(timeout=10_000)
        expect(pet.locator(".status-line").get_by_text("Error", exact=True)).to_have_count(1)
        # the box refused it before the press's look ran; its sentence stays on the line when the toast fades
        expect(pet.locator(".status-line").first).to_contain_text("⚠️ K per class must be at least 1, not 0.")
        page.reload(wait_until="domcontentloaded")
        assert dialogs == []  # nothing finished yet: nothing to lose

        page.get_by_role("tab", name="Cloze").click()
        cloze = page.locator("#tab-cloze")
        enter(cloze.get_by_label("Test texts to evaluate"), "4")
        cloze.get_by_role("button", name="Evaluate on the test split").click()
        expect(cloze.get_by_text(re.compile(r"Accuracy \d+(\.\d)?%"))).to_be_visible(
            timeout=FIRST_CALL_TIMEOUT_S * 1000
        )
        page.reload(wait_until="domcontentloaded")
        # it asks (twice for one reload once, with the machine's load at 12: the count is chromium's)
        assert dialogs and set(dialogs) == {"beforeunload"}


def test_an_upload_keeps_the_visitors_template_and_typed_columns_fill_the_verbalizer(
    chromium, browser, app_url, tmp_path
):
    """An upload replaced a template the visitor had typed with "Text: {text}\\nLabel:{mask}", saying nothing; and a
    file whose columns had other names left the boxes on rt-sentiment's words after the columns were typed, so the
    evaluation was refused for labels the file lacks."""
    require_browser(chromium[1])
    from playwright.sync_api import expect

    news = tmp_path / "news.jsonl"
    rows = [("Shares fell sharply today.", "business"), ("The striker scored twice.", "sport")] * 6
    news.write_text("\n".join(json.dumps({"sentence": text, "topic": topic}) for text, topic in rows))
    with opened(browser, app_url, "Cloze", height=1400) as page:
        tab = page.locator("#tab-cloze")
        template, verbalizer = tab.get_by_label("Template(s)"), tab.get_by_label("Verbalizer")
        expect(template).to_be_visible(timeout=30_000)
        enter(template, "My news: {text}\nVerdict:{mask}")
        tab.locator("input[type=file][accept*=jsonl]").set_input_files(str(news))
        expect(page.get_by_text("has no text column 'text'").first).to_be_visible(timeout=30_000)
        enter(tab.get_by_label("Text column"), "sentence")
        enter(tab.get_by_label("Label column", exact=False).first, "topic")
        expect(verbalizer).to_have_value("business: business\nsport: sport", timeout=30_000)
        expect(template).to_have_value("My news: {text}\nVerdict:{mask}")


def test_an_error_row_of_a_long_text_keeps_its_gold_and_prediction_in_sight(chromium, browser, app_url, tmp_path):
    """A 2,400-word review made its row of "Most confident errors" taller than the screen, its gold label,
    prediction and confidence centred far below the text's first lines."""
    require_browser(chromium[1])
    from playwright.sync_api import expect

    long_reviews = tmp_path / "long.csv"
    filler = "The plot was fine and the cast was fine. " * 40  # 1,640 characters: the same words, either label
    rows = [
        (f"Review {i}: {filler}", label, split)
        for i, (label, split) in enumerate(
            [("negative", "train"), ("positive", "train")] * 2 + [("negative", "test"), ("positive", "test")] * 2
        )
    ]
    pd.DataFrame(rows, columns=["text", "label", "split"]).to_csv(long_reviews, index=False)
    with opened(browser, app_url, "Cloze") as page:
        tab = page.locator("#tab-cloze")
        tab.locator("input[type=file][accept*=jsonl]").set_input_files(str(long_reviews))
        enter(tab.get_by_label("Test texts to evaluate"), "4")
        tab.get_by_role("button", name="Evaluate on the test split").click()
        expect(tab.get_by_text(re.compile(r"Accuracy \d+(\.\d)?%"))).to_be_visible(timeout=FIRST_CALL_TIMEOUT_S * 1000)
        table = tab.get_by_role("grid", name="Most confident errors")
        row = table.get_by_role("row").nth(1)  # each label has two of the four texts: some are wrong
        expect(row).to_contain_text(re.compile(r"(negative|positive).*\d+\.\d%"))
        row.scroll_into_view_if_needed()
        cells = row.get_by_role("gridcell")
        assert len(cells.last.inner_text()) < len(filler) / 3  # the text's start, a click away from the rest
        assert row.bounding_box()["height"] < 200
        expect(cells.first).to_be_in_viewport()


def test_a_task_picked_after_an_upload_is_the_data_scored(chromium, browser, app_url, tmp_path):
    """With a file uploaded, picking bbc-topic in the list left the file in use: its results were shown under the
    list's bbc-topic, with only the list's small print to tell."""
    require_browser(chromium[1])
    from playwright.sync_api import expect

    mine = tmp_path / "mine.csv"
    rows = [(f"Shares fell sharply on day {i}.", "business") for i in range(8)]
    rows += [(f"The striker scored {i} goals.", "sport") for i in range(8)]
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(mine, index=False)
    with opened(browser, app_url, "Cloze") as page:
        tab = page.locator("#tab-cloze")
        verbalizer = tab.get_by_label("Verbalizer")
        tab.locator("input[type=file][accept*=jsonl]").set_input_files(str(mine))
        expect(verbalizer).to_have_value("business: business\nsport: sport", timeout=30_000)
        tab.get_by_label("Task", exact=True).click()
        page.get_by_role("option", name="rt-sentiment").click()
        expect(verbalizer).to_have_value(re.compile(r"^negative: .*\npositive: "), timeout=30_000)
        expect(tab.get_by_text("mine.csv")).to_have_count(0)  # the upload box is emptied
        enter(tab.get_by_label("Test texts to evaluate"), "4")
        tab.get_by_role("button", name="Evaluate on the test split").click()
        expect(tab.get_by_text(re.compile(r"Accuracy \d+(\.\d)?% on rt-sentiment"))).to_be_visible(
            timeout=FIRST_CALL_TIMEOUT_S * 1000
        )
