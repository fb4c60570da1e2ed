"""The docs stay true: their Python examples run, and the API reference matches the code."""

import os
import re
import runpy
from pathlib import Path

import matplotlib
import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
GUIDES = sorted(p.name for p in DOCS.glob("*.md") if "```python" in p.read_text())


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.mark.parametrize("guide", GUIDES)
def test_examples_run(guide, tmp_path, monkeypatch):
    """Every ```python block of a guide runs, in order, in one namespace (in a scratch folder)."""
    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for number, block in enumerate(python_blocks((DOCS / guide).read_text()), 1):
        try:
            exec(compile(block, f"{guide} block {number}", "exec"), namespace)
        except Exception as error:  # pragma: no cover - the message is the point
            raise AssertionError(f"{guide}, python block {number} failed: {type(error).__name__}: {error}") from error


def test_api_reference_is_current():
    generator = runpy.run_path(str(DOCS / "make_api_reference.py"))
    expected = generator["render"]()
    assert (DOCS / "api.md").read_text() == expected, "docs/api.md is stale: run python docs/make_api_reference.py"


def test_every_guide_is_linked_from_the_readme():
    readme = (DOCS.parent / "README.md").read_text()
    for page in DOCS.glob("*.md"):
        assert f"docs/{page.name}" in readme, f"README.md does not link docs/{page.name}"
    assert os.path.exists(DOCS / "figures" / "positions.png")
