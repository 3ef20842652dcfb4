"""(c) YAML validation: every mistake is an error naming the bad key."""

import pytest
import yaml

from pulse.config import ConfigError
from pulse.train import main
from pulse.training.config import TrainConfig, load_run_config
from training_factories import tiny_run


def _write(tmp_path, data):
    path = tmp_path / "run.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("change, match", [
    ({"train": {"stpes": 10}}, r"train\.stpes: unknown setting"),
    ({"train": {"lr": "fast"}}, r"train\.lr: must be a positive number"),
    ({"train": {"batch_size": 0}}, r"train\.batch_size: must be a positive integer"),
    ({"train": {"warmup": -1}}, r"train\.warmup"),
    ({"train": {"prune_at": [0]}}, r"train\.prune_at"),
    ({"train": {"amp": "fp8"}}, r"train\.amp"),
    ({"model": {"hidden_sise": 64}}, r"model\.hidden_sise: unknown field"),
    ({"model": {"num_heads": 3}}, r"model\.num_heads"),
    ({"model": {"type": "rnn"}}, r"model\.type"),
    ({"task": {"name": "storyworld"}}, r"task\.name: unknown task 'storyworld'"),
])
def test_bad_values_name_the_key(tmp_path, change, match):
    with pytest.raises(ConfigError, match=match):
        load_run_config(_write(tmp_path, tiny_run(**change)))


def test_transformer_rejects_pulse_fields(tmp_path):
    data = tiny_run()
    data["model"] = {"type": "transformer", "hidden_size": 16, "num_layers": 1, "num_heads": 2, "num_states": 4}
    with pytest.raises(ConfigError, match=r"model\.num_states: unknown field for TransformerConfig"):
        load_run_config(_write(tmp_path, data))


def test_structural_errors(tmp_path):
    with pytest.raises(ConfigError, match="modle: unknown section"):
        load_run_config(_write(tmp_path, {**tiny_run(), "modle": {}}))
    with pytest.raises(ConfigError, match="task: missing section"):
        load_run_config(_write(tmp_path, {"model": {}, "train": {}}))
    with pytest.raises(ConfigError, match="empty"):
        load_run_config(_write(tmp_path, ""))
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_run_config(_write(tmp_path, "model: [unclosed"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_run_config(tmp_path / "missing.yaml")


def test_bad_task_argument_is_named(tmp_path):
    from pulse.train import build_run_task

    run = load_run_config(_write(tmp_path, tiny_run(task={"num_pairz": 3})))
    with pytest.raises(ValueError, match="num_pairz"):
        build_run_task(run)


def test_cli_overrides_and_errors(tmp_path, capsys):
    path = _write(tmp_path, tiny_run())
    run = load_run_config(path, [(["train", "steps"], 9), (["model", "hidden_size"], 32)])
    assert run.train.steps == 9 and run.model["hidden_size"] == 32
    assert main(["--config", str(path), "--set", "model.hidden_sise=8", "--out", str(tmp_path / "o")]) == 2
    assert "model.hidden_sise" in capsys.readouterr().err
    assert main(["--config", str(path), "--set", "nonsense", "--out", str(tmp_path / "o")]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_yaml_scientific_notation_without_dot_is_a_number():
    assert TrainConfig.from_dict({"lr": "3e-4"}).lr == pytest.approx(3e-4)


def test_shipped_configs_are_valid():
    from pathlib import Path

    root = Path(__file__).resolve().parents[3] / "configs"
    paths = sorted(root.glob("*.yaml"))
    assert paths
    for p in paths:
        load_run_config(p)
