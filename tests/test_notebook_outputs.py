"""The committed notebooks' figures render anywhere: on GitHub, on nbviewer and in `jupyter nbconvert --to html`.

Those viewers do not run plotly.js, so a figure stored only as plotly JSON (`application/vnd.plotly.v1+json`) shows
as nothing. `scripts/build_notebooks.py` saves every plotly figure with a static PNG beside its JSON
(`nb_helpers.store_figures_as_png`). These tests read the committed files (no kernel, no execution):

- every output that holds a plotly figure also holds an `image/png`;
- nbconvert's `HTMLExporter` turns each figure (plotly or matplotlib) into one embedded PNG `<img>`.

A notebook executed before the PNGs existed fails both, with the command that rebuilds it. One more test renders
a figure through the same helper, to show kaleido and Chromium work here (skipped without chromium, except under
CI=true).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
COMMITTED = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
PLOTLY = "application/vnd.plotly.v1+json"
PNG = "image/png"
PNG_IMG = re.compile(r'<img\b[^>]*\bsrc="data:image/png;base64,')  # an <img> with the PNG embedded
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def rebuild_hint(path: Path) -> str:
    return f"rebuild it: .venv/bin/python scripts/build_notebooks.py {path.name[:2]} (it needs Debian's chromium)"


def figure_outputs(nb: nbformat.NotebookNode) -> list[tuple[int, dict]]:
    """(cell position, output) of every output that holds a figure: plotly JSON or a PNG (matplotlib's)."""
    return [(i, out) for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
            for out in cell.get("outputs", []) if PLOTLY in out.get("data", {}) or PNG in out.get("data", {})]


@lru_cache(maxsize=None)
def html_exporter():
    """One nbconvert HTMLExporter for every notebook (building it loads the templates)."""
    from nbconvert import HTMLExporter

    return HTMLExporter()


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.stem)
def test_every_plotly_figure_also_holds_a_png(path: Path):
    nb = nbformat.read(path, as_version=4)
    plotly = [(i, out) for i, out in figure_outputs(nb) if PLOTLY in out["data"]]
    without = [i for i, out in plotly if PNG not in out["data"]]
    assert not without, (f"{path.name}: {len(without)} of {len(plotly)} plotly figures have no image/png "
                         f"(cells {without}); {rebuild_hint(path)}")
    for i, out in plotly:
        assert base64.b64decode(out["data"][PNG]).startswith(PNG_MAGIC), f"{path.name} cell {i}: not a PNG"


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.stem)
def test_html_export_embeds_one_png_per_figure(path: Path):
    nb = nbformat.read(path, as_version=4)
    figures = len(figure_outputs(nb))
    html, _ = html_exporter().from_notebook_node(nb)
    embedded = len(PNG_IMG.findall(html))
    assert embedded == figures, (f"{path.name}: the HTML export embeds {embedded} PNG images for {figures} figures; "
                                 f"{rebuild_hint(path)}")


def test_store_figures_as_png_adds_a_png_to_a_shown_figure(tmp_path: Path):
    """The helper the build uses, in a fresh interpreter (it changes plotly's global renderer and starts a browser)."""
    if not (os.environ.get("BROWSER_PATH") or shutil.which("chromium")):
        hint = "Debian chromium is missing: apt-get update && apt-get install -y chromium"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {hint}")
        pytest.skip(hint)
    script = (
        "import base64, json, sys, plotly.graph_objects as go\n"
        f"sys.path.insert(0, {str(NOTEBOOKS)!r})\n"
        "import nb_helpers\n"
        "nb_helpers.store_figures_as_png()\n"
        "fig = go.Figure(go.Bar(x=['a', 'b'], y=[1, 2]))\n"
        "fig.update_layout(height=300)\n"
        "bundle = fig._repr_mimebundle_()\n"
        "png = base64.b64decode(bundle['image/png'])\n"
        "size = [int.from_bytes(png[16:20], 'big'), int.from_bytes(png[20:24], 'big')]  # the IHDR chunk\n"
        "print(json.dumps({'mimetypes': sorted(bundle), 'size': size}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr == "", proc.stderr[-2000:]  # the build refuses a notebook that wrote to stderr
    shown = json.loads(proc.stdout)
    assert shown == {"mimetypes": [PLOTLY, PNG], "size": [900, 300]}, shown  # nb_helpers.PNG_WIDTH, the own height


def test_cells_hidden_in_a_source_are_hidden_in_its_notebook():
    """`# %% jupyter={"source_hidden": true}` (the exercises' solutions) survives the build into the committed file."""
    sys.path.insert(0, str(REPO / "scripts"))
    import build_notebooks

    def hidden(nb: nbformat.NotebookNode) -> list[int]:
        return [i for i, cell in enumerate(nb.cells) if cell.metadata.get("jupyter", {}).get("source_hidden")]

    found = 0
    for source in build_notebooks.sources():
        want = hidden(build_notebooks.build_notebook(source))
        have = hidden(nbformat.read(build_notebooks.notebook_path(source), as_version=4))
        assert have == want, f"{source.name}: hidden cells {want}, its notebook hides {have}"
        found += len(want)
    assert found, "no source hides a cell (notebook 06's solutions should)"
