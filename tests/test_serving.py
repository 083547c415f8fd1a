"""Public-mode caps, stop flags with a time limit, and sessions that clean up after themselves."""

from __future__ import annotations

import re
import time

import pytest

from peftlab.errors import PeftlabError
from peftlab.serving import LOCAL_CAPS, PUBLIC_CAPS, Caps, JobStop, current_caps, heavy_job_limit, public_mode
from peftlab.ui.sessions import LEFT, Sessions


@pytest.mark.parametrize(
    ("env", "public"),
    [
        ({}, False),
        ({"SPACE_ID": "me/peftlab"}, True),
        ({"SPACE_ID": "me/peftlab", "PEFTLAB_PUBLIC": "0"}, False),
        ({"PEFTLAB_PUBLIC": "1"}, True),
        ({"PEFTLAB_PUBLIC": "off"}, False),
    ],
)
def test_public_mode_follows_the_space_and_the_override(monkeypatch, env, public):
    for name in ("SPACE_ID", "PEFTLAB_PUBLIC"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert public_mode() is public
    assert current_caps() == (PUBLIC_CAPS if public else LOCAL_CAPS)


def test_caps_refuse_with_one_sentence_naming_the_input_and_its_limit():
    PUBLIC_CAPS.check("steps", 60, "Steps")  # at the limit is fine
    with pytest.raises(PeftlabError) as raised:
        PUBLIC_CAPS.check("steps", 61, "Steps")
    assert str(raised.value) == (
        "Steps is 61, above this public Space's limit of 60; lower it, or run peftlab on your "
        "own machine for larger jobs."
    )
    with pytest.raises(PeftlabError, match=r"^K per class is 100000000, above"):  # it said 1e+08, not what was typed
        PUBLIC_CAPS.check("shots", 100000000, "K per class")
    LOCAL_CAPS.check("steps", 10**6, "Steps")  # nothing is capped off a public Space
    assert PUBLIC_CAPS.note("steps") == "at most 60 on this public Space" and LOCAL_CAPS.note("steps") == ""


def test_only_allowed_models_load_on_a_public_space(monkeypatch):
    PUBLIC_CAPS.check_model("smollm2-135m")
    for name in ("/etc", "./my-model", "someone/huge-model"):
        with pytest.raises(
            PeftlabError,
            match=rf"^This public Space loads only these models: smollm2-135m, .*; "
            rf"'{name}' is not one of them",
        ):
            PUBLIC_CAPS.check_model(name)
    LOCAL_CAPS.check_model("/any/folder")
    monkeypatch.setenv("PEFTLAB_PUBLIC", "1")
    monkeypatch.setenv("PEFTLAB_PUBLIC_MODELS", "gpt2, smollm2-135m")
    assert current_caps().models == ("gpt2", "smollm2-135m")


def test_heavy_jobs_run_one_at_a_time_on_a_cpu_unless_told(monkeypatch):
    monkeypatch.delenv("PEFTLAB_HEAVY_JOBS", raising=False)
    assert heavy_job_limit() == 1  # this machine has no GPU
    monkeypatch.setenv("PEFTLAB_HEAVY_JOBS", "3")
    assert heavy_job_limit() == 3


def test_a_job_stop_sets_itself_at_its_deadline_and_keeps_the_first_reason():
    stop = JobStop(seconds=0.05)
    assert not stop.is_set()
    time.sleep(0.08)
    assert stop.is_set() and stop.reason == "it reached this Space's limit of 0.000833333 minutes per job"
    pressed = JobStop()
    pressed.stop("you pressed Stop")
    pressed.stop(LEFT)
    assert pressed.is_set() and pressed.reason == "you pressed Stop"
    assert not JobStop().is_set()


def test_closing_a_session_stops_its_jobs_and_removes_its_objects_and_files(monkeypatch, tmp_path):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    sessions = Sessions()

    class Request:
        session_hash = "abc/../../etc"  # a session hash never reaches a path unchecked

    session = sessions.get(Request())
    assert sessions.get(Request()) is session
    stop = session.start_job("soft-prompts")
    session.values["trained"] = {"lora": object()}
    file = session.path("../results.csv")
    file.write_text("x")
    assert file.parent.parent == tmp_path / "peftlab-sessions" and file.name == "results.csv"
    # a download's name says what and when, to the second; the older download of the same thing goes
    first = session.download("rt-sentiment", "compare", suffix="csv")
    first.write_text("x")
    assert re.fullmatch(r"peftlab-rt-sentiment-compare-\d{4}-\d\d-\d\d-\d{6}\.csv", first.name)
    # an uploaded file's task loses its suffix: "peftlab-plain.csv-cloze-predictions-...csv" read as two kinds of file
    uploaded = session.download("plain.csv", "cloze-predictions", suffix="csv")
    assert re.fullmatch(r"peftlab-plain-cloze-predictions-\d{4}-\d\d-\d\d-\d{6}\.csv", uploaded.name)
    assert session.download("gpt2", "v1.5", suffix="zip").name.startswith("peftlab-gpt2-v1.5-")  # not a file's
    # a long model id gives way, not the time or the suffix ("...-seed-42-2026-1" was cut at 120 characters)
    model = "my-org/SmolLM2-135M-finetuned-" + "x" * 100
    long = session.download(model, "prompt-tuning", "K 16, seed 42", suffix="zip")
    assert len(long.name) <= 120 and re.fullmatch(
        r"peftlab-my-org-SmolLM2-135M-finetuned-x+-prompt-tuning-K-16-seed-42-[0-9a-f]{8}-\d{4}-\d\d-\d\d-\d{6}\.zip",
        long.name,
    )
    long.write_text("x")  # another model id cut alike is another download: it took the first one's name, and its file
    other = session.download(model + "-v2", "prompt-tuning", "K 16, seed 42", suffix="zip")
    assert other.name != long.name and long.exists()
    kept = session.download("rt-sentiment", "report", suffix="html")
    kept.write_text("y")
    time.sleep(1.1)
    second = session.download("rt-sentiment", "compare", suffix="csv")
    assert second != first and not first.exists() and kept.exists()
    session.queue_job("soft-prompts")  # pressed again while it runs: the page drops that press
    assert session.leave_queue("soft-prompts") is None
    assert session.running and session.stop_job("soft-prompts", "you pressed Stop") == "running" and stop.is_set()
    assert not session.stop_job("autoprompt", "you pressed Stop")  # nothing of that kind runs
    session.end_job("soft-prompts", stop)
    assert not session.running and not session.stop_job("soft-prompts", "you pressed Stop")
    other = session.start_job("rlhf", "Step 1 (SFT)")
    assert session.busy("rlhf") == "Step 1 (SFT)" and session.busy("soft-prompts") is None  # what a press is told
    sessions.close(Request.session_hash)
    assert other.is_set() and other.reason == LEFT
    assert session.values == {} and not file.exists() and not session.folder.exists() and len(sessions) == 0


def test_a_public_visitor_s_results_go_with_their_session(monkeypatch, tmp_path):
    """The Compare tab says a public visitor's results last as long as the page, but every closed session's rows
    stayed in the store, which nobody could read again (their owner, a session hash, never comes back)."""
    from peftlab.store import ResultRow, ResultStore

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    monkeypatch.setenv("PEFTLAB_RESULTS", str(tmp_path / "r.sqlite"))
    monkeypatch.setenv("PEFTLAB_PUBLIC", "1")

    def result() -> ResultRow:
        return ResultRow("rlhf", "m", "t", "f", "ppo", {}, None, None)

    class Request:
        def __init__(self, key):
            self.session_hash = key

    sessions = Sessions()
    ResultStore(owner="leaving").add([result(), result()])
    ResultStore(owner="staying").add([result()])
    ResultStore().add([result()])  # a row of no visitor's (the CLI's, imported before the Space went public)
    sessions.get(Request("leaving"))
    sessions.close("leaving")
    owners = [r.owner for store in ("leaving", "staying", "") for r in ResultStore(owner=store).rows()]
    assert owners == ["staying", ""]
    monkeypatch.setenv("PEFTLAB_PUBLIC", "0")  # on one's own machine, the results are kept for good
    sessions.get(Request("staying"))
    sessions.close("staying")
    assert len(ResultStore(owner="staying").rows()) == 1


def test_a_job_finishing_after_its_visitor_left_keeps_nothing_of_theirs(monkeypatch, tmp_path):
    """Found by a review of many visitors at once: a job that ran on after its page closed (the Start tab's scoring,
    which no stop flag ended) kept its rows in the public store for good, after `close` had deleted the visitor's;
    its trained model went into a session made anew, held for IDLE_HOURS; a download made the removed folder again.
    The job holds its session: once closed, it keeps nothing there. The page's next press (gradio closes a session
    whose page lost its connection a moment) gets a new session."""
    from peftlab.store import ResultRow, ResultStore
    from peftlab.ui.presses import keep_results
    from peftlab.ui.soft_prompts_tab import keep_trained

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    monkeypatch.setenv("PEFTLAB_RESULTS", str(tmp_path / "r.sqlite"))
    monkeypatch.setenv("PEFTLAB_PUBLIC", "1")
    sessions = Sessions()

    class Request:
        session_hash = "gone"

    def row() -> ResultRow:
        return ResultRow("rlhf", "m", "t", "0123456789abcdef", "ppo", {}, None, None)

    running = sessions.get(Request())  # what a job holds while it runs
    sessions.close("gone")
    keep_results(running, [row()])
    keep_trained(running, "lora", object())
    assert ResultStore(owner="gone").rows() == [] and running.values == {} and len(sessions) == 0
    with pytest.raises(PeftlabError, match=r"^The page of this job was closed, so nothing more is saved for it\.$"):
        running.download("rt-sentiment", "cloze-predictions", suffix="csv")
    assert not running.folder.exists()
    again = sessions.get(Request())
    assert again is not running and not again.left
    keep_results(again, [row()])
    assert len(ResultStore(owner="gone").rows()) == 1
    monkeypatch.setenv("PEFTLAB_PUBLIC", "0")  # on one's own machine a finished result is kept for good
    keep_results(running, [row()])
    assert len(ResultStore().rows()) == 1


@pytest.mark.parametrize("key", ["", "local"])
def test_a_public_call_without_a_session_hash_of_its_own_is_refused(monkeypatch, tmp_path, key):
    """gradio lets an API client send any session hash: "" and "local" were the session of calls without a request,
    the owner of the store's rows of no visitor (never expiring), which any such client listed and deleted (a
    security review's finding for "local")."""
    from peftlab.ui.sessions import results_owner

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    monkeypatch.setenv("PEFTLAB_PUBLIC", "1")

    class Request:
        session_hash = key

    for call in (lambda: Sessions().get(Request()), lambda: results_owner(Request())):
        with pytest.raises(PeftlabError) as raised:
            call()
        assert str(raised.value) == (
            "This call came without a session hash of its own; open the app's page, or send one with the call."
        )
    if key == "local":  # nor may such a client's page, closed, close the session of calls without a request
        from peftlab.ui.sessions import LOCAL, SESSIONS, close_session

        local = SESSIONS.get(None)
        close_session(Request())
        assert SESSIONS.get(None) is local and local.key == LOCAL
    assert results_owner(None) == ""  # tests and scripts: no visitor's
    monkeypatch.setenv("PEFTLAB_PUBLIC", "0")
    assert results_owner(Request()) == "" and Sessions().get(Request()).key == "local"


def test_idle_sessions_are_closed_unless_a_job_runs(monkeypatch, tmp_path):
    import peftlab.ui.sessions as sessions_module

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    sessions = Sessions()

    class Request:
        def __init__(self, key):
            self.session_hash = key

    idle, busy = sessions.get(Request("idle")), sessions.get(Request("busy"))
    busy.start_job("rlhf")
    idle.last_seen = busy.last_seen = time.monotonic() - sessions_module.IDLE_HOURS * 3600 - 1
    sessions.get(Request("new"))
    assert len(sessions) == 2 and sessions.get(Request("busy")) is busy


def test_caps_are_a_frozen_record():
    with pytest.raises(AttributeError):
        PUBLIC_CAPS.steps = 10**6
    assert Caps().job_seconds is None and PUBLIC_CAPS.job_seconds == 20 * 60


def test_uploads_are_limited_by_the_caps_at_launch(monkeypatch):
    from peftlab.ui import launch_options

    monkeypatch.setenv("PEFTLAB_PUBLIC", "1")
    assert launch_options()["max_file_size"] == 5 * 2**20
    monkeypatch.setenv("PEFTLAB_PUBLIC", "0")
    assert launch_options()["max_file_size"] == 200 * 2**20
