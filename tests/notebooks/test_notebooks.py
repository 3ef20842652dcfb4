"""The notebooks under notebooks/ run top to bottom, and the committed files are clean.

Each notebook is executed with nbclient in a fresh ``python3`` kernel, started with the
Python that runs the tests (jupyter_client puts ``sys.executable`` in place of the
kernelspec's ``python``), with the working directory ``notebooks/`` so that the notebooks'
relative paths (``../checkpoints/...``) resolve. ``PULSE_CHECKPOINTS`` is removed from the
kernel's environment, so the notebooks are always checked against the shipped checkpoints.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[2]
NB_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NB_DIR.glob("[0-9][0-9]_*.ipynb"))
IDS = [p.stem for p in NOTEBOOKS]
CELL_TIMEOUT_S = 180  # per cell; every notebook takes well under a minute on 2 CPU cores
MAX_BYTES = 2_000_000


def _code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def _errors(nb) -> list[str]:
    out = []
    for i, cell in enumerate(nb.cells):
        for o in cell.get("outputs", []):
            if o.get("output_type") == "error":
                out.append(f"cell {i}: {o.get('ename')}: {o.get('evalue')}")
    return out


def test_the_eight_notebooks_and_their_index():
    assert len(NOTEBOOKS) == 8, [p.name for p in NOTEBOOKS]
    readme = (NB_DIR / "README.md").read_text(encoding="utf-8")
    for p in NOTEBOOKS:
        assert p.name in readme, f"notebooks/README.md does not mention {p.name}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_committed_notebook_is_clean(path):
    """Stored outputs come from one clean top-to-bottom run (or there are none), with no
    error outputs, and the file stays small enough to read on the web."""
    assert path.stat().st_size < MAX_BYTES, f"{path.name}: {path.stat().st_size} bytes"
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    assert not _errors(nb), _errors(nb)
    counts = [c.get("execution_count") for c in _code_cells(nb)]
    assert counts == [None] * len(counts) or counts == list(range(1, len(counts) + 1)), \
        f"{path.name}: execution counts {counts}: outputs are not from one top-to-bottom run"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_runs(path, monkeypatch):
    monkeypatch.delenv("PULSE_CHECKPOINTS", raising=False)
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(NB_DIR)}})
    km = client.create_kernel_manager()
    cmd = km.format_kernel_cmd()
    assert Path(cmd[0]).resolve() == Path(sys.executable).resolve(), \
        f"the python3 kernel would start {cmd[0]}, not this interpreter {sys.executable}"
    client.execute()
    assert not _errors(nb), _errors(nb)
