"""The front door holds: the README's links and the docs' links resolve, the commands it shows exist
with the options it gives them, and it stays short enough to read."""
import re
import shlex

import pytest

from experiments.cli import COMMANDS, build_parser
from tests.conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CODE = re.compile(r"^```(?:bash|sh)?\n(.*?)^```$", re.S | re.M)


def anchors(text: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#+ (.+)$", text, re.M)}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_link_resolves(page):
    text = page.read_text()
    for target in LINK.findall(text):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        assert dest.exists(), f"{page.name}: link to {target} points at nothing"
        if anchor and dest.suffix == ".md":
            assert anchor in anchors(dest.read_text()), f"{page.name}: no heading for #{anchor} in {dest.name}"


def shown_commands(text: str):
    """(command, its argument words) for every `python -m experiments <command> ...` in code blocks."""
    for block in CODE.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line.split(" #")[0]) if "-m experiments" in line else []
            if "experiments" in words and "-m" in words:
                rest = words[words.index("experiments") + 1:]
                if rest and not rest[0].startswith("-"):
                    yield rest[0], rest[1:]


def test_every_command_the_readme_shows_exists_with_its_options():
    shown = list(shown_commands((ROOT / "README.md").read_text()))
    assert {"sample-efficiency", "describe", "make-manifest"} <= {c for c, _ in shown}
    for command, args in shown:
        assert command in COMMANDS, f"README shows `{command}`, which `python -m experiments --help` does not list"
        parser = build_parser(command)
        _, extra = parser.parse_known_args([command, *args])
        unknown = [w for w in extra if w.startswith("-") or "=" not in w]
        assert not unknown, f"README: `{command}` given {unknown}, which its --help does not list"


def test_the_readme_is_a_front_door():
    text = (ROOT / "README.md").read_text()
    lines = text.splitlines()
    assert len(lines) <= 180, f"README.md has {len(lines)} lines"
    first = [line for line in lines[:6] if line.startswith("python3 -m venv")]
    assert len(first) == 2 and "sample-efficiency" in first[0] and "pytest" in first[1]
    assert re.search(r"!\[[^\]]*\]\(docs/[^)]+\.png\)", text), "the main figure, committed under docs/"
