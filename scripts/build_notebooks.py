"""Build the guided notebooks from their Python sources, execute them, and save them with outputs.

The notebooks are authored as plain Python files in `scripts/notebook_sources/NN_name.py`, cells separated by
"percent" markers (the format jupytext and VS Code understand):

    # %% [markdown]
    # # A heading
    # Some prose.

    # %%
    # NBVAL_CHECK_OUTPUT
    print(obs.shape)

This script turns each source into `notebooks/NN_name.ipynb` (nbformat 4, kernelspec `python3`, stable cell ids),
executes it with nbclient in `notebooks/` with `ESPER_LAB_NB_SIZE` set (default `full`: the committed outputs come
from a full run), and refuses to save a notebook whose execution wrote anything to stderr or raised.

    .venv/bin/python scripts/build_notebooks.py                # build + execute all, full size
    .venv/bin/python scripts/build_notebooks.py 03 05          # only notebooks whose name starts with 03 or 05
    .venv/bin/python scripts/build_notebooks.py --size ci      # a quick execution (do not commit these outputs)
    .venv/bin/python scripts/build_notebooks.py --no-execute   # regenerate the cells only (outputs dropped)
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parent.parent
SOURCES = REPO / "scripts" / "notebook_sources"
NOTEBOOKS = REPO / "notebooks"
CELL_MARKER = re.compile(r"^# %%(?P<kind> \[markdown\])?\s*$")
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


def parse_source(text: str) -> list[tuple[str, str]]:
    """`[(kind, source)]` with kind 'markdown' or 'code', from a percent-format Python file.

    Markdown lines drop their leading '# ' (a bare '#' is an empty line). Leading and trailing blank lines of every
    cell are dropped; text before the first marker (a module docstring, say) is ignored.
    """
    cells: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        match = CELL_MARKER.match(line)
        if match:
            cells.append(("markdown" if match.group("kind") else "code", []))
            continue
        if not cells:
            continue
        kind, lines = cells[-1]
        if kind == "markdown":
            if line.startswith("# "):
                line = line[2:]
            elif line.strip() == "#":
                line = ""
            elif line.strip():
                raise ValueError(f"markdown cell line does not start with '# ': {line!r}")
        lines.append(line)
    out = []
    for kind, lines in cells:
        while lines and not lines[0].strip():
            lines.pop(0)
        while lines and not lines[-1].strip():
            lines.pop()
        if lines:
            out.append((kind, "\n".join(lines)))
    return out


def build_notebook(source_path: Path) -> nbformat.NotebookNode:
    """An unexecuted notebook from one source file, with cell ids derived from the file name and position."""
    nb = nbformat.v4.new_notebook()
    stem = source_path.stem
    for i, (kind, source) in enumerate(parse_source(source_path.read_text())):
        cell = nbformat.v4.new_markdown_cell(source) if kind == "markdown" else nbformat.v4.new_code_cell(source)
        cell["id"] = hashlib.sha1(f"{stem}/{i}".encode()).hexdigest()[:12]
        nb.cells.append(cell)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = {"name": "python", "pygments_lexer": "ipython3"}
    return nb


def stderr_outputs(nb: nbformat.NotebookNode) -> list[str]:
    """Every stderr stream and error output of an executed notebook, as 'cell N: text' lines."""
    problems = []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                problems.append(f"cell {i}: stderr: {out.get('text', '')[:500]}")
            elif out.get("output_type") == "error":
                problems.append(f"cell {i}: {out.get('ename')}: {out.get('evalue')}")
    return problems


def execute(nb: nbformat.NotebookNode, size: str, timeout: int) -> float:
    """Execute in place in `notebooks/` with ESPER_LAB_NB_SIZE=size; returns the wall time in seconds."""
    os.environ["ESPER_LAB_NB_SIZE"] = size
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
        allow_errors=True,  # collected and reported below, with the cell they came from
        record_timing=False,  # no per-cell timestamps in the committed files
    )
    start = time.perf_counter()
    client.execute()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("only", nargs="*", help="build only notebooks whose name starts with one of these")
    parser.add_argument("--size", choices=("ci", "full"), default="full", help="ESPER_LAB_NB_SIZE (default: full)")
    parser.add_argument("--no-execute", action="store_true", help="write the cells without running them")
    parser.add_argument("--timeout", type=int, default=1800, help="per-cell timeout in seconds (default: 1800)")
    args = parser.parse_args(argv)

    sources = sorted(SOURCES.glob("[0-9][0-9]_*.py"))
    if args.only:
        sources = [s for s in sources if any(s.stem.startswith(prefix) for prefix in args.only)]
    if not sources:
        print("no notebook sources matched", file=sys.stderr)
        return 1
    failed = 0
    for source in sources:
        nb = build_notebook(source)
        target = NOTEBOOKS / f"{source.stem}.ipynb"
        if args.no_execute:
            nbformat.write(nb, target)
            print(f"{target.relative_to(REPO)}: written without outputs")
            continue
        seconds = execute(nb, args.size, args.timeout)
        problems = stderr_outputs(nb)
        if problems:
            failed += 1
            print(f"{source.name}: NOT saved ({seconds:.1f} s at size {args.size}):", file=sys.stderr)
            for line in problems:
                print("   " + line, file=sys.stderr)
            continue
        nbformat.validate(nb)
        nbformat.write(nb, target)
        print(f"{target.relative_to(REPO)}: executed at size {args.size} in {seconds:.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
