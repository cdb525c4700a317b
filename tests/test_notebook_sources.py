"""The committed notebooks are built from `scripts/notebook_sources/` (no kernel: the cells are compared, not run)."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))

import build_notebooks  # noqa: E402

SOURCES = build_notebooks.sources()


def code_cells(nb: nbformat.NotebookNode) -> list[str]:
    """The stripped sources of a notebook's code cells, in order."""
    return [cell.source.strip() for cell in nb.cells if cell.cell_type == "code"]


def test_every_notebook_has_a_source_and_vice_versa():
    built = {build_notebooks.notebook_path(s).name for s in SOURCES}
    committed = {p.name for p in build_notebooks.NOTEBOOKS.glob("*.ipynb")}
    assert SOURCES, "no notebook sources found"
    assert committed == built, (f"notebooks without a source: {sorted(committed - built)}; "
                                f"sources without a notebook: {sorted(built - committed)}")


@pytest.mark.parametrize("source", SOURCES, ids=lambda s: s.stem)
def test_notebook_code_matches_its_source(source: Path):
    target = build_notebooks.notebook_path(source)
    rebuild = f"run `.venv/bin/python scripts/build_notebooks.py {source.stem[:2]}` and commit both files"
    assert target.exists(), f"{target.name} is missing: {rebuild}"
    expected = code_cells(build_notebooks.build_notebook(source))
    committed = code_cells(nbformat.read(target, as_version=4))
    for i, (want, have) in enumerate(zip(expected, committed)):
        assert have == want, (f"{target.name}: code cell {i} differs from {source.name} (first differing cell):\n"
                              f"--- source\n{want}\n--- notebook\n{have}\n{rebuild}")
    assert len(committed) == len(expected), (f"{target.name} has {len(committed)} code cells, {source.name} "
                                             f"{len(expected)}: {rebuild}")
