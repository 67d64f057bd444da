"""Execute every notebook in notebooks/ on CPU and keep the committed notebooks clean.

Each notebook runs in a fresh `python3` kernel (nbclient + ipykernel) whose working directory is a
temporary folder, so nothing it writes (MIDI files, training runs) lands in the repository; the kernel
imports zoo from this checkout (the repository root is put first on PYTHONPATH). A notebook with a
cell tagged `parameters` gets a cell injected right after it with the quick settings of
`QUICK_PARAMETERS` (papermill's convention), e.g. a few training steps on a tiny model.

Committed notebooks carry no outputs and no execution counts. To strip them after running them in
Jupyter (nbconvert is not a dependency):

    python tests/test_notebooks.py            # strips every notebooks/*.ipynb in place
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))

CELL_TIMEOUT_S = 180  # nbclient's limit for any one cell
NOTEBOOK_BUDGET_S = 240  # a whole notebook; they take 5-25 s each on 2 shared cores

# What each notebook must show: "text" = printed output, "image" = an image/png display,
# "audio" = an HTML <audio> player (IPython.display.Audio). Every notebook must be listed here.
EXPECTED_OUTPUTS = {
    "01_gpt_quickstart.ipynb": {"text"},
    "02_image_quickstart.ipynb": {"text", "image"},
    "03_music_quickstart.ipynb": {"text", "image", "audio"},
    "04_text2image_quickstart.ipynb": {"image"},
    "05_train_your_own.ipynb": {"text", "image"},
    "06_attention_core.ipynb": {"text", "image"},
    "07_finetune.ipynb": {"text"},
}

# Code injected after a notebook's `parameters` cell; {tmp} is the kernel's working directory.
QUICK_PARAMETERS = {
    "05_train_your_own.ipynb": 'QUICK = True\nMAX_STEPS = 4\nRUN_DIR = "{tmp}/run"',
    "07_finetune.ipynb": 'MAX_STEPS = 4\nRUN_DIR = "{tmp}/run"',
}

# Files a notebook writes into its working directory (proves it ran there, not in the repository).
EXPECTED_FILES = {
    "03_music_quickstart.ipynb": ["bach_sample.mid"],
    "05_train_your_own.ipynb": ["run/checkpoints/last.ckpt"],
    "07_finetune.ipynb": ["run/checkpoints/last.ckpt", "my_text.txt"],
}


# ---- stripping ------------------------------------------------------------------------------------
def strip_notebook(nb: nbformat.NotebookNode) -> bool:
    """Clear outputs, execution counts and per-cell execution metadata in place; True if anything changed."""
    changed = False
    for cell in nb.cells:
        if cell.get("cell_type") != "code":
            continue
        if cell.get("outputs") or cell.get("execution_count") is not None:
            cell["outputs"], cell["execution_count"] = [], None
            changed = True
        for key in ("execution", "collapsed", "scrolled"):
            if key in cell.get("metadata", {}):
                del cell["metadata"][key]
                changed = True
    return changed


def strip_notebooks(paths: list[Path] | None = None) -> list[Path]:
    """Strip notebooks in place (default: all of notebooks/); returns the files that changed."""
    changed = []
    for path in paths if paths is not None else NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        if strip_notebook(nb):
            nbformat.write(nb, path)
            changed.append(path)
    return changed


def dirty_cells(nb: nbformat.NotebookNode) -> list[str]:
    """Descriptions of the code cells that carry outputs, execution counts or execution metadata."""
    problems = []
    for i, cell in enumerate(nb.cells):
        if cell.get("cell_type") != "code":
            continue
        if cell.get("outputs"):
            problems.append(f"cell {i}: {len(cell['outputs'])} output(s)")
        if cell.get("execution_count") is not None:
            problems.append(f"cell {i}: execution_count {cell['execution_count']}")
        if "execution" in cell.get("metadata", {}):
            problems.append(f"cell {i}: execution timing metadata")
    return problems


# ---- running --------------------------------------------------------------------------------------
def inject_parameters(nb: nbformat.NotebookNode, code: str) -> int:
    """Insert `code` as a new cell right after the cell tagged `parameters`; returns its index."""
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(tagged) != 1:
        raise ValueError(f"expected exactly one cell tagged 'parameters', found {len(tagged)} (cells {tagged})")
    cell = nbformat.v4.new_code_cell(code)
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(tagged[0] + 1, cell)
    return tagged[0] + 1


def output_kinds(nb: nbformat.NotebookNode) -> set[str]:
    kinds = set()
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stdout" and out.get("text", "").strip():
                kinds.add("text")
            data = out.get("data", {})
            if "image/png" in data:
                kinds.add("image")
            if "<audio" in data.get("text/html", ""):
                kinds.add("audio")
            if "text/plain" in data and out.get("output_type") == "execute_result":
                kinds.add("text")
    return kinds


def execute(path: Path, workdir: Path) -> nbformat.NotebookNode:
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    if path.name in QUICK_PARAMETERS:
        inject_parameters(nb, QUICK_PARAMETERS[path.name].format(tmp=workdir.as_posix()))
    elif any("parameters" in c.get("metadata", {}).get("tags", []) for c in nb.cells):
        raise AssertionError(f"{path.name} has a 'parameters' cell but no quick settings in QUICK_PARAMETERS")
    NotebookClient(nb, timeout=CELL_TIMEOUT_S, startup_timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(workdir)}}).execute()
    return nb


@pytest.fixture
def kernel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel inherits this process's environment: this checkout's zoo, one thread, no display."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MKL_NUM_THREADS", "1")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend, not a headless one


# ---- tests ----------------------------------------------------------------------------------------
def test_every_notebook_is_listed() -> None:
    assert NOTEBOOKS, f"no notebooks found in {NOTEBOOK_DIR}"
    names = {p.name for p in NOTEBOOKS}
    assert names == set(EXPECTED_OUTPUTS), (
        f"notebooks/ and EXPECTED_OUTPUTS differ: unlisted {sorted(names - set(EXPECTED_OUTPUTS))}, "
        f"missing {sorted(set(EXPECTED_OUTPUTS) - names)}")
    readme = (NOTEBOOK_DIR / "README.md").read_text()
    assert [n for n in names if n not in readme] == [], "notebooks/README.md must have a line per notebook"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_clean_and_introduced(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert dirty_cells(nb) == [], f"{path.name} is not stripped: run `python tests/test_notebooks.py`"
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# "), \
        f"{path.name} must open with a markdown cell with a title"
    assert "CPU" in first.source and ("second" in first.source or "minute" in first.source), \
        f"{path.name}: the first cell must say how long the notebook takes on a CPU"


def test_strip_notebook_clears_outputs_and_counts() -> None:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# t"), nbformat.v4.new_code_cell("1 + 1")])
    code = nb.cells[1]
    code.outputs = [nbformat.v4.new_output("execute_result", data={"text/plain": "2"}, execution_count=3)]
    code.execution_count = 3
    code.metadata["execution"] = {"iopub.status.idle": "2026-01-01T00:00:00Z"}
    assert dirty_cells(nb) == ["cell 1: 1 output(s)", "cell 1: execution_count 3", "cell 1: execution timing metadata"]
    assert strip_notebook(nb) is True
    assert dirty_cells(nb) == [] and code.source == "1 + 1"
    assert strip_notebook(nb) is False  # already clean: nothing to rewrite


def test_inject_parameters_goes_after_the_tagged_cell() -> None:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# t"), nbformat.v4.new_code_cell("A = 1"),
                                         nbformat.v4.new_code_cell("print(A)")])
    nb.cells[1].metadata["tags"] = ["parameters"]
    assert inject_parameters(nb, "A = 2") == 2
    assert [c.source for c in nb.cells[1:]] == ["A = 1", "A = 2", "print(A)"]
    nb.cells[2].metadata["tags"] = ["parameters"]  # two tagged cells: ambiguous
    with pytest.raises(ValueError, match="exactly one cell tagged 'parameters', found 2"):
        inject_parameters(nb, "A = 3")


def test_output_kinds_recognises_text_images_and_audio() -> None:
    new_output = nbformat.v4.new_output
    cell = nbformat.v4.new_code_cell("")
    assert output_kinds(nbformat.v4.new_notebook(cells=[cell])) == set()
    cell.outputs = [new_output("stream", name="stderr", text="a warning\n"),
                    new_output("stream", name="stdout", text="  \n"),
                    new_output("display_data", data={"text/plain": "<Figure>"})]
    assert output_kinds(nbformat.v4.new_notebook(cells=[cell])) == set()  # warnings, blanks, figure reprs
    cell.outputs = [new_output("stream", name="stdout", text="hello\n"),
                    new_output("display_data", data={"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"}),
                    new_output("display_data", data={"text/html": '<audio controls="controls">...</audio>'})]
    assert output_kinds(nbformat.v4.new_notebook(cells=[cell])) == {"text", "image", "audio"}


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path: Path, kernel_env: None) -> None:
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    before = sorted(p.name for p in NOTEBOOK_DIR.iterdir())
    start = time.perf_counter()
    nb = execute(path, tmp_path)  # raises CellExecutionError (with the traceback) if a cell fails
    elapsed = time.perf_counter() - start
    print(f"{path.name}: {elapsed:.1f} s")
    assert elapsed < NOTEBOOK_BUDGET_S, f"{path.name} took {elapsed:.0f} s; budget {NOTEBOOK_BUDGET_S} s"
    missing = EXPECTED_OUTPUTS[path.name] - output_kinds(nb)
    assert not missing, f"{path.name} produced no {sorted(missing)} output"
    for rel in EXPECTED_FILES.get(path.name, []):
        assert (tmp_path / rel).is_file(), f"{path.name} should have written {rel} in its working directory"
    assert sorted(p.name for p in NOTEBOOK_DIR.iterdir()) == before, f"{path.name} wrote into notebooks/"


if __name__ == "__main__":
    targets = [Path(a) for a in sys.argv[1:]] or None
    for p in strip_notebooks(targets):
        print(f"stripped {p}")
