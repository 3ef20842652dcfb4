"""The benchmark scripts stay wired to the library, and the committed GPU tables come from the
committed rows. (Nothing here times anything: speed is measured by the scripts themselves.)"""

import importlib.util
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_block_breakdown_runs_every_piece(tmp_path):
    breakdown = load_script("gpu_block_breakdown")
    breakdown.main(["--smoke", "--device", "cpu", "--out", str(tmp_path)])
    table = (tmp_path / "block_breakdown.md").read_text()
    for piece in ("PULSE block (auto backend)", "Transformer block", "no-mixing block", "LocalConv",
                  "fusion gate + mixer_out", "SwiGLU FFN", "RMSNorm", "SDPA attention + q/k/v/o proj"):
        row = next(line for line in table.splitlines() if line.startswith(f"| {piece} |"))
        assert "error" not in row
        assert math.isfinite(float(row.split("|")[2])) and float(row.split("|")[2]) > 0


def test_scaling_measurements_return_every_timing(monkeypatch):
    scaling = load_script("scaling")
    monkeypatch.setenv("BENCH_THREADS", "1")
    layer = scaling.measure_layer(T=40, repeats=1)
    assert set(layer) == {"path_chunked_s", "path_loop_s", "layer_chunked_s", "layer_loop_s"}
    assert all(v > 0 for v in layer.values())
    generation = scaling.measure_generation("pulse_chunked", [8, 24], rounds=1, tokens_per_round=2)
    assert set(generation) == {"8", "24"} and all(v > 0 for v in generation.values())


@pytest.mark.parametrize("section", ["## Training step (eager)", "## Generation (per new token"])
def test_committed_gpu_tables_are_rebuilt_from_the_committed_rows(tmp_path, section):
    suite = load_script("gpu_suite")
    suite.report_from([RESULTS / "gpu_results.csv"], tmp_path, "NVIDIA H200")

    def table_after(text: str) -> list[str]:
        lines = text.splitlines()
        start = next(i for i, line in enumerate(lines) if line.startswith(section))
        rows = [line for line in lines[start + 1:start + 30] if line.startswith("|")]
        return rows

    rebuilt = table_after((tmp_path / "gpu_throughput.md").read_text())
    committed = table_after((RESULTS / "gpu_throughput.md").read_text())
    assert len(rebuilt) > 3
    assert rebuilt == committed
