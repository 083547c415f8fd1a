"""What a Space installs and runs: the front matter's Python and the pinned torch are versions ZeroGPU documents,
the Gradio SDK matches the pin, and the code keeps to Python 3.10 (the oldest ZeroGPU Python; only 3.11 can be
installed here, so this is checked statically with vermin)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from peftlab.zerogpu import PYTHON_VERSIONS, TORCH_VERSIONS

ROOT = Path(__file__).resolve().parent.parent


def front_matter() -> dict:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("---\n")[1]
    return dict(line.split(": ", 1) for line in block.strip().splitlines())


def pinned(package: str) -> str:
    match = re.search(rf"^{re.escape(package)}==(\S+)", (ROOT / "requirements.txt").read_text(), re.MULTILINE)
    assert match, f"{package} is not pinned in requirements.txt"
    return match.group(1)


def test_the_space_runs_a_python_and_a_torch_that_zero_gpu_documents():
    assert front_matter()["python_version"].strip('"') in PYTHON_VERSIONS
    assert pinned("torch") in TORCH_VERSIONS
    assert pinned("spaces")  # the ZeroGPU decorator, effect-free elsewhere


def test_the_sdk_version_is_the_pinned_gradio():
    assert front_matter()["sdk_version"] == pinned("gradio")


def test_the_code_runs_on_python_3_10():
    paths = [str(ROOT / p) for p in ("peftlab", "app.py", "benchmarks", "tests")]
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("vermin")),
            "--no-tips",
            "--eval-annotations",
            "--violations",
            "-t=3.10-",
            *paths,
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr  # --violations lists each line that needs a newer Python
