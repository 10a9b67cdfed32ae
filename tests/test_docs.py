"""The user pages: a short README whose set-up commands are CI's, pictures that exist, and no
development history (issue numbers, work sessions) on any page a user reads. The site itself is
built by CI (`mkdocs build --strict`: broken links, pages left out of the navigation)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
HISTORY = re.compile(r"\b(?:issue|stop)\s+\d+\b|\bthis round\b|\bquality round\b|\bre-measured\b", re.I)


def test_the_readme_is_short_and_its_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    commands = re.findall(r"```bash\n(python3 -m venv .*)\n```", readme)
    assert len(commands) == 2 and commands[0].endswith("&& anomalykit run ama")
    assert commands[1].endswith('-e ".[dev]" && python -m pytest -q')
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install -q torch==2.13.0 setuptools wheel ninja" in ci and "\npython -m pytest -q\n" in ci


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_pages_speak_of_the_product(page):
    hits = [m.group(0) for m in HISTORY.finditer(page.read_text())]
    assert not hits, f"{page.name}: development history on a user page: {hits[:5]}"


def test_every_local_image_and_link_of_the_readme_exists():
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r'(?:src="|\]\()((?:docs/|CHANGELOG)[^")#]+)', readme)
    assert targets and all((ROOT / t).is_file() for t in targets), [t for t in targets if not (ROOT / t).is_file()]


def test_the_history_check_catches_what_it_is_for():
    assert HISTORY.search("the default since issue 25") and HISTORY.search("measured in stop 38")
    assert HISTORY.search("measured in stop\n38")  # split across a line
    assert not HISTORY.search("an issue with 3 stops") and not HISTORY.search("the first stop")
