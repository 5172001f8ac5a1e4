"""The non-editable install check (tests/install_check.py), when LAYERWISE_INSTALL_CHECK=1.

It creates a virtual environment and installs torch and the project into it (about a minute with a
warm package cache), so it is off by default.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("LAYERWISE_INSTALL_CHECK") != "1",
                    reason="set LAYERWISE_INSTALL_CHECK=1 to install the project into a fresh venv")
def test_installed_library_loads_a_model_runs_a_probe_and_a_sampler(tmp_path):
    script = Path(__file__).with_name("install_check.py")
    res = subprocess.run([sys.executable, str(script), "--venv", str(tmp_path / "venv")], capture_output=True,
                         text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "install check passed" in res.stdout and "diffusion_generate: (2, 8)" in res.stdout
