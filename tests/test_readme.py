"""The README is read from a clone: everything it points to is inside it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_readme_refers_to_nothing_outside_the_repository() -> None:
    text = (ROOT / "README.md").read_text()
    assert "../" not in text
    for target in re.findall(r"\]\(([^)#][^)]*)\)", text):
        if "://" not in target:
            assert (ROOT / target).exists(), target
