"""environment.yml: conda-forge only (no defaults channel), Python that the pinned constraints accept,
torch at the project's floor and the project itself through pip, with the tested constraints.

(Conda channels cannot be reached from the machines this is tested on, so the conda solve itself is
not run here; the pip section is resolvable with `uv pip compile -c constraints.txt`.)
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def test_environment_yml_uses_conda_forge_and_installs_the_project_through_pip() -> None:
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pyproject = (REPO / "pyproject.toml").read_text()
    requires_python = re.search(r'^requires-python = "(.+)"', pyproject, re.M)
    torch_floor = re.search(r'^    "(torch[^"]*)",', pyproject, re.M)
    assert requires_python and torch_floor
    assert env["channels"] == ["conda-forge", "nodefaults"]
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    (pip,) = [d["pip"] for d in env["dependencies"] if isinstance(d, dict)]
    assert not any(re.match(r"(py)?torch\b", d) for d in conda)  # torch from PyPI, never a conda build
    (python,) = [d for d in conda if d.startswith("python")]
    low = re.search(r">=(\d+)\.(\d+)\.(\d+)", python)
    floor = re.search(r">=(\d+)\.(\d+)", requires_python[1])
    assert low and floor and tuple(map(int, low.groups()[:2])) >= tuple(map(int, floor.groups()))
    assert tuple(map(int, low.groups())) >= (3, 11, 5)  # what the pinned constraints need
    assert any(d.startswith("pip") for d in conda)
    assert torch_floor[1].startswith("torch>=") and torch_floor[1] in pip  # the project's floor, not a pin
    assert "-e .[all]" in pip and "-c constraints.txt" in pip
    pins = (REPO / "constraints.txt").read_text()
    assert re.search(r"^transformers==", pins, re.M) and not re.search(r"^torch==", pins, re.M)
