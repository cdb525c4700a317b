"""Build the guided notebooks from their Python sources, execute them, and save them with outputs.

The notebooks are authored as plain Python files in `scripts/notebook_sources/NN_name.py`, in jupytext's "percent"
format (which VS Code and JupyterLab understand too):

    # %% [markdown]
    # # A heading
    # Some prose.

    # %%
    # NBVAL_CHECK_OUTPUT
    print(obs.shape)

This script reads each source with jupytext, writes it as `notebooks/NN_name.ipynb` (nbformat 4, kernelspec
`python3`, stable cell ids; cell metadata such as `jupyter={"source_hidden": true}` is kept), executes it with
nbclient in `notebooks/` with `ESPER_LAB_NB_SIZE` set (default `full`: the committed outputs come from a full run) and
`ESPER_LAB_NB_PNG=1`, so that every plotly figure is saved with a static PNG beside its plotly JSON (kaleido and
Debian's `chromium`; `nb_helpers.setup`), and refuses to save a notebook whose execution wrote anything to stderr
or raised. The .ipynb files are generated: edit the source, rebuild, commit both (`tests/test_notebook_sources.py`
fails when they drift apart).

    .venv/bin/python scripts/build_notebooks.py                # build + execute all, full size
    .venv/bin/python scripts/build_notebooks.py 03 05          # only notebooks whose name starts with 03 or 05
    .venv/bin/python scripts/build_notebooks.py --size ci      # a quick execution (do not commit these outputs)
    .venv/bin/python scripts/build_notebooks.py --no-png       # figures as plotly JSON only (do not commit these)
    .venv/bin/python scripts/build_notebooks.py --no-execute   # regenerate the cells only (outputs dropped)
    .venv/bin/python scripts/build_notebooks.py --keep-outputs # regenerate the cells, keep the committed outputs
                                                               # of every code cell whose source is unchanged
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parent.parent
SOURCES = REPO / "scripts" / "notebook_sources"
NOTEBOOKS = REPO / "notebooks"
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
NEW_CELL = {"code": nbformat.v4.new_code_cell, "markdown": nbformat.v4.new_markdown_cell,
            "raw": nbformat.v4.new_raw_cell}
TEXT_ONLY_METADATA = ("cell_marker", "lines_to_next_cell", "lines_to_end_of_cell_marker")  # jupytext's layout keys


def sources(only: list[str] | None = None) -> list[Path]:
    """The notebook sources `NN_*.py`, sorted; with `only`, those whose name starts with one of its prefixes."""
    found = sorted(SOURCES.glob("[0-9][0-9]_*.py"))
    return [s for s in found if any(s.stem.startswith(p) for p in only)] if only else found


def notebook_path(source: Path) -> Path:
    """The notebook built from `source`: notebooks/<same stem>.ipynb."""
    return NOTEBOOKS / f"{source.stem}.ipynb"


def build_notebook(source_path: Path) -> nbformat.NotebookNode:
    """An unexecuted notebook from one percent-format source (read by jupytext), with cell ids derived from the file
    name and position and the kernelspec set."""
    text_nb = jupytext.read(source_path, fmt="py:percent")
    nb = nbformat.v4.new_notebook()
    for i, cell in enumerate(text_nb.cells):
        metadata = {k: v for k, v in cell.metadata.items() if k not in TEXT_ONLY_METADATA}
        new = NEW_CELL[cell.cell_type](cell.source, metadata=metadata)
        new["id"] = hashlib.sha1(f"{source_path.stem}/{i}".encode()).hexdigest()[:12]
        nb.cells.append(new)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = {"name": "python", "pygments_lexer": "ipython3"}
    return nb


def keep_outputs(nb: nbformat.NotebookNode, committed: nbformat.NotebookNode) -> list[int]:
    """Copy into `nb` the outputs (and execution counts) of `committed`'s code cells that sit at the same position
    with the same source, and `committed`'s notebook metadata (language_info, widget state); returns the positions
    of the code cells that got none."""
    nb.metadata = nbformat.from_dict({**committed.metadata, "kernelspec": dict(KERNELSPEC)})
    dropped = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        old = committed.cells[i] if i < len(committed.cells) else None
        if old is not None and old.cell_type == "code" and old.source == cell.source:
            cell.outputs, cell.execution_count = old.outputs, old.execution_count
        else:
            dropped.append(i)
    return dropped


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


def execute(nb: nbformat.NotebookNode, size: str, timeout: int, png: bool = True) -> float:
    """Execute in place in `notebooks/` with ESPER_LAB_NB_SIZE=size and ESPER_LAB_NB_PNG=1 (0 without `png`);
    returns the wall time in seconds."""
    os.environ["ESPER_LAB_NB_SIZE"] = size
    os.environ["ESPER_LAB_NB_PNG"] = "1" if png else "0"  # read by nb_helpers.setup() in the kernel
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


def write(nb: nbformat.NotebookNode, target: Path, note: str) -> None:
    """Validate and save `nb` at `target`, printing `note` after its path."""
    nbformat.validate(nb)
    nbformat.write(nb, target)
    print(f"{target.relative_to(REPO)}: {note}")


def build(source: Path, args: argparse.Namespace) -> bool:
    """Build one notebook as the options say; returns False when it was not saved (execution problems)."""
    nb, target = build_notebook(source), notebook_path(source)
    if args.no_execute:
        write(nb, target, "written without outputs")
    elif args.keep_outputs:
        dropped = keep_outputs(nb, nbformat.read(target, as_version=4)) if target.exists() else "all"
        write(nb, target, f"rebuilt without executing; code cells without outputs: {dropped or 'none'}")
    else:
        seconds = execute(nb, args.size, args.timeout, png=not args.no_png)
        problems = stderr_outputs(nb)
        if problems:
            print(f"{source.name}: NOT saved ({seconds:.1f} s at size {args.size}):", file=sys.stderr)
            for line in problems:
                print("   " + line, file=sys.stderr)
            return False
        write(nb, target, f"executed at size {args.size} in {seconds:.1f} s")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("only", nargs="*", help="build only notebooks whose name starts with one of these")
    parser.add_argument("--size", choices=("ci", "full"), default="full", help="ESPER_LAB_NB_SIZE (default: full)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--no-execute", action="store_true", help="write the cells without running them")
    mode.add_argument("--keep-outputs", action="store_true",
                      help="write the cells without running them, keeping the committed outputs of unchanged cells")
    parser.add_argument("--timeout", type=int, default=1800, help="per-cell timeout in seconds (default: 1800)")
    parser.add_argument("--no-png", action="store_true",
                        help="do not store a PNG beside each plotly figure (quicker; needs no chromium)")
    args = parser.parse_args(argv)

    chosen = sources(args.only)
    if not chosen:
        print("no notebook sources matched", file=sys.stderr)
        return 1
    failed = sum(not build(source, args) for source in chosen)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
