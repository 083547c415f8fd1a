"""What one browser session owns, and its end: stop flags of its jobs, trained objects, temporary files.

Gradio keeps a closed session's `gr.State` for an hour in case the visitor comes back; trained models
are too large to keep that long for every visitor who left. So a session's objects live here, keyed by
its `session_hash`, and `close()` (wired to `demo.unload`, which runs when the tab closes) stops its
running jobs, drops its objects and removes its folder at once. A session that never says goodbye (an
API client that just vanished) is closed after `IDLE_HOURS` without a call, unless a job of it runs.

Files a session offers for download are written into its own folder inside Gradio's upload folder,
so Gradio serves them without copying and nothing is left behind when the folder goes.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import gc
import hashlib
import re
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import gradio as gr
from gradio.utils import get_upload_folder

from peftlab.errors import PeftlabError
from peftlab.serving import JobStop, current_caps, public_mode
from peftlab.store import ResultStore
from peftlab.uploads import DATA_SUFFIXES

IDLE_HOURS = 6.0
LEFT = "the visitor left"
LOCAL = "local"  # the session of calls without a request (tests, scripts): no visitor's, and no owner of rows
UNNAMED_JOB = "This tab's last job"  # `Session.busy` of a job pressed without a name
MAX_NAME = 120  # characters of a file name the session writes (well under any file system's 255 bytes)


class Session:
    """One visitor's jobs, objects and files. Once closed (`left`), a job still holding it keeps nothing in it: a job
    that ran on after its page closed wrote the removed folder again, and kept its rows and trained models."""

    def __init__(self, key: str):
        self.key = key
        self.left = False
        self.values: dict = {}  # per-tab objects: trained methods, RLHF stages, rankings
        self.last_seen = time.monotonic()
        self._stops: dict[str, JobStop] = {}  # the running jobs, by kind
        self._queued: dict[str, JobStop] = {}  # jobs pressed and waiting in the queue, by kind (`queue_job`)
        self._opened: dict[str, JobStop] = {}  # jobs out of the queue whose handler has not claimed them (`open_job`)
        self._names: dict[str, str] = {}  # what the last job pressed of each kind is called ("Step 1 (SFT)")
        self._downloads: dict[tuple[str, str], Path] = {}  # the latest download of each name and suffix
        self._lock = threading.Lock()

    @property
    def owner(self) -> str:
        """Whose results in the store are this session's (`results_owner`)."""
        return _owner(self.key)

    @property
    def folder(self) -> Path:
        return Path(get_upload_folder()) / "peftlab-sessions" / _safe_name(self.key)

    def path(self, name: str) -> Path:
        """A path for a file this session writes (downloads), in its own folder.

        Raises:
            PeftlabError: the session was closed (a job finishing after `close` made the removed folder again).
        """
        if self.left:
            raise PeftlabError("The page of this job was closed, so nothing more is saved for it.")
        self.folder.mkdir(parents=True, exist_ok=True)
        return self.folder / _safe_name(name)

    def download(self, *about: str, suffix: str) -> Path:
        """A path for a download whose name says what it holds and when: `download("rt-sentiment", "compare",
        suffix="csv")` is `.../peftlab-rt-sentiment-compare-2026-11-30-142501.csv` (model ids' slashes become
        dashes). The time tells two runs of a day apart (they shared a name, and the browser called the second
        "(1)"); an older download of the same thing goes (each Compare press wrote a report of 4.6 MB). An uploaded
        file's task loses its suffix ("peftlab-plain.csv-cloze-predictions-....csv" named two kinds of file)."""
        parts = [re.sub(r"[^A-Za-z0-9._]+", "-", _unsuffixed(part)).strip("-.") for part in ("peftlab", *about)]
        parts = list(filter(None, parts))
        whole = "-".join(parts)  # what the download is, however its name is cut
        tail = f"-{datetime.datetime.now():%Y-%m-%d-%H%M%S}.{suffix}"
        if len(whole) + len(tail) > MAX_NAME:
            # a long part (a model id) gives way: `path` cut the name's end, the time and the suffix; a digest of the
            # whole keeps apart two names cut alike (two model ids that differ past the cut)
            tail = f"-{hashlib.sha256(whole.encode()).hexdigest()[:8]}{tail}"
        while (excess := len("-".join(parts)) + len(tail) - MAX_NAME) > 0 and max(map(len, parts)) > 1:
            longest = max(range(len(parts)), key=lambda i: len(parts[i]))
            parts[longest] = parts[longest][: max(1, len(parts[longest]) - excess)].rstrip("-.") or "x"
        path = self.path("-".join(parts) + tail)
        older = self._downloads.get((whole, suffix))
        if older is not None and older != path:
            older.unlink(missing_ok=True)
        self._downloads[(whole, suffix)] = path
        return path

    def queue_job(self, kind: str, name: str = UNNAMED_JOB) -> None:
        """Note a job of `kind` (called `name`, for `busy`) that was pressed and now waits in the queue, so Stop can
        stop it before it starts. Not while one of `kind` runs: the page drops a press whose job is still going, so
        none would wait."""
        with self._lock:
            if kind not in self._stops:
                self._queued[kind] = JobStop()
                self._names[kind] = name

    def busy(self, kind: str) -> str | None:
        """The name `queue_job` was given for this session's job of `kind` that runs or waits, or None when none
        does: one tab's jobs share their stop flag and their objects (a second RLHF stage pressed while SFT ran was
        told "Run step 1 (SFT) first.")."""
        with self._lock:
            if kind in self._stops or kind in self._queued:
                return self._names.get(kind, UNNAMED_JOB)
        return None

    def refuse_while_busy(self, kind: str) -> None:
        """Raise a PeftlabError naming this session's job of `kind` that runs or waits, if one does: a press that
        needs what that job is making (an RLHF stage's model, which it drops as it starts) waits for it."""
        if running := self.busy(kind):
            raise _still_running(running)

    def leave_queue(self, kind: str) -> JobStop | None:
        """The queued job of `kind` starts: its flag (set when Stop was pressed while it waited), or None."""
        with self._lock:
            return self._queued.pop(kind, None)

    def open_job(self, kind: str) -> JobStop | None:
        """The pressed job of `kind` leaves the queue and runs from now: a running job's stop flag, which the
        handler's `start_job` then takes over, so Stop and `busy` reach it while the handler loads its model or
        measures its pace (Stop said "nothing to stop" there, and the job ran to its end). None when Stop was
        pressed while it waited: it does not start.

        Raises:
            PeftlabError: a job of `kind` runs already (an API client's second call, which skips the press's look).
        """
        with self._lock:
            queued = self._queued.pop(kind, None)
            if queued is not None and queued.is_set():
                return None
            if kind in self._stops:
                raise _still_running(self._names.get(kind, UNNAMED_JOB))
            stop = self._opened[kind] = self._stops[kind] = JobStop(current_caps().job_seconds)
        return stop

    def start_job(self, kind: str, name: str | None = None) -> JobStop:
        """The stop flag of this session's job of `kind` (one per tab), with the caps' time limit: the one `open_job`
        made for it, or a fresh one (a handler called without a press: tests, scripts); `name`, when given, is what
        `busy` calls it (a job started without a press of its own tab: the Start tab's scoring)."""
        with self._lock:
            opened = self._opened.pop(kind, None)
            stop = (
                opened
                if opened is not None and self._stops.get(kind) is opened
                else JobStop(current_caps().job_seconds)
            )
            self._stops[kind] = stop
            if name is not None:
                self._names[kind] = name
        return stop

    def end_job(self, kind: str, stop: JobStop) -> None:
        with self._lock:
            if self._stops.get(kind) is stop:
                del self._stops[kind]
            if self._opened.get(kind) is stop:  # a handler that ended before it claimed its job (a refusal)
                del self._opened[kind]
        self.last_seen = time.monotonic()

    @property
    def running(self) -> bool:
        return bool(self._stops)

    def stop_job(self, kind: str, reason: str) -> str | None:
        """Ask the job of `kind` to stop: "running" when one runs (it stops after its current step), "queued" when
        one waits in the queue (it will not start), None when there is none. Under the lock: a job leaving the queue
        between the two looks (`open_job`) was in neither, and ran with its flag unset."""
        with self._lock:
            for state, jobs in (("running", self._stops), ("queued", self._queued)):
                stop = jobs.get(kind)
                if stop is not None and not stop.is_set():
                    stop.stop(reason)
                    return state
        return None

    def close(self) -> None:
        """Stop every job, drop every object, remove the folder; on a public Space, delete the visitor's results too
        (they last as long as the page, the Compare tab says): rows nobody could ever read again piled up in the
        store, one visitor after another."""
        self.left = True
        for stop in [*self._stops.values(), *self._queued.values()]:
            stop.stop(LEFT)
        self.values.clear()
        shutil.rmtree(self.folder, ignore_errors=True)
        if public_mode() and self.key != LOCAL:
            # nobody is left to tell of a store that cannot be opened: the visitor's next job says it, on their page
            with contextlib.suppress(PeftlabError, sqlite3.Error):
                ResultStore(owner=self.key, create=False).forget_owner()
        _return_freed_memory()


def _still_running(name: str) -> PeftlabError:
    return PeftlabError(f"{name} is still running: press this once it has finished, or stop it.")


class Sessions:
    """The sessions of this process, by session hash."""

    def __init__(self):
        self._sessions: dict[str, Session] = {}
        self._openers: dict[tuple[str, str], Session] = {}  # (hash, kind) -> the session a running press opened
        self._lock = threading.Lock()

    def open_job(self, request: gr.Request | None, kind: str) -> tuple[Session, JobStop | None]:
        """The caller's session and the flag of its press's job of `kind`, which runs from now (`Session.open_job`,
        whose None and errors it passes on). Until `close_job`, `opener` gives the handler that session even once it
        is closed: a page closed while its job loaded the model stopped the flag of a session the handler never saw
        (it got a new one), and the job ran to its end."""
        session = self.get(request)
        stop = session.open_job(kind)
        if stop is not None:
            with self._lock:
                self._openers[(session.key, kind)] = session
        return session, stop

    def close_job(self, session: Session, kind: str, stop: JobStop) -> None:
        """The press's job of `kind` (`open_job`) ended."""
        session.end_job(kind, stop)
        with self._lock:
            if self._openers.get((session.key, kind)) is session:
                del self._openers[(session.key, kind)]

    def opener(self, request: gr.Request | None, kind: str) -> Session:
        """The session whose press opened the running job of `kind` (`open_job`), closed or not; else `get`'s."""
        with self._lock:
            session = self._openers.get((session_key(request), kind))
        return session if session is not None else self.get(request)

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, request: gr.Request | None) -> Session:
        """The caller's session (created on first use, and anew after `close`: gradio closes a session whose page
        lost its connection for a moment, and the page goes on with its hash); calls without a request (tests,
        scripts) share one.

        Raises:
            PeftlabError: on a public Space, a request without a session hash (`session_key`).
        """
        key = session_key(request)
        self._close_idle()
        with self._lock:
            session = self._sessions.setdefault(key, Session(key))
        session.last_seen = time.monotonic()
        return session

    def close(self, key: str) -> None:
        with self._lock:
            session = self._sessions.pop(key, None)
        if session is not None:
            session.close()

    def _close_idle(self) -> None:
        cutoff = time.monotonic() - IDLE_HOURS * 3600
        with self._lock:
            idle = [key for key, s in self._sessions.items() if s.last_seen < cutoff and not s.running]
        for key in idle:
            self.close(key)


def session_key(request: gr.Request | None) -> str:
    """The caller's session hash; LOCAL for calls without a request (tests, scripts), and for a local app's call
    without a hash.

    Raises:
        PeftlabError: on a public Space, a request without a session hash, or with LOCAL as its hash: gradio lets an
            API client send any hash, and "" or "local" was the session of calls without a request, which owns the
            store's rows of no visitor, never expiring (a security review's finding: two clients sending "local"
            read and deleted each other's rows).
    """
    if request is None:
        return LOCAL
    key = getattr(request, "session_hash", None)
    if public_mode() and (not key or key == LOCAL):
        raise PeftlabError(
            "This call came without a session hash of its own; open the app's page, or send one with the call."
        )
    return key or LOCAL


def results_owner(request: gr.Request | None) -> str:
    """Whose results in the store the caller reads and writes: on a public Space the visitor's own (by session
    hash), locally everyone's (""); calls without a request (tests, scripts) are no visitor's."""
    return _owner(session_key(request))


def _owner(key: str) -> str:
    return key if public_mode() and key != LOCAL else ""


SESSIONS = Sessions()


def close_session(request: gr.Request) -> None:
    """`demo.unload` handler: the visitor closed or reloaded the tab. On a public Space a client's "local" is no
    session of a visitor's (`session_key`): it closes nothing."""
    if public_mode() and request.session_hash == LOCAL:
        return
    SESSIONS.close(request.session_hash)


def _return_freed_memory() -> None:
    """Free the session's models now and hand the freed heap back to the system (glibc keeps it otherwise)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _safe_name(name: str) -> str:
    """A file name with nothing but letters, digits, dot, dash and underscore (never a path)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", str(name)).strip(".-")
    return cleaned[:MAX_NAME] or "file"


def _unsuffixed(part: str) -> str:
    """`part` without a data file's suffix: an uploaded file's task ("plain.csv") names a download as "plain"."""
    path = Path(part)
    return path.stem if path.suffix.lower() in DATA_SUFFIXES else part
