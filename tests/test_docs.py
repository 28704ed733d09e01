"""The README stays a front page (short, the two commands first) and the docs site builds without warnings."""
import os
import pathlib
import re
import subprocess
import sys

import pytest
import yaml  # pyyaml: a dependency of mkdocs, in the docs extra (part of the test extra)

ROOT = pathlib.Path(__file__).resolve().parent.parent
README_MAX_LINES = 150


def test_readme_is_short_and_starts_with_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= README_MAX_LINES, "README.md is a front page: move details into docs/"
    commands = re.findall(r"^make (\S+)", text, re.M)
    assert commands[:2] == ["train", "test"], f"the first commands must be `make train`, `make test`: {commands}"


def nav_pages(nav) -> list[str]:
    """Every page named in mkdocs.yml's nav (entries are {title: page} or {title: [entries]})."""
    pages = []
    for entry in nav:
        for value in (entry.values() if isinstance(entry, dict) else [entry]):
            pages.extend(nav_pages(value) if isinstance(value, list) else [value])
    return pages


def test_every_page_in_the_nav_exists_and_every_page_is_in_the_nav():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    docs = ROOT / config.get("docs_dir", "docs")
    pages = nav_pages(config["nav"])
    assert [p for p in pages if not (docs / p).is_file()] == []
    on_disk = sorted(str(p.relative_to(docs)) for p in docs.rglob("*.md"))
    assert sorted(pages) == on_disk, "a page missing from the nav is built but unreachable"


@pytest.mark.slow
def test_mkdocs_build_strict(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env=env,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-5000:]
