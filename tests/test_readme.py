"""The README's promises: its hook table matches the model, its code examples run."""

import re
from pathlib import Path

import torch

from pulse import PulseConfig, PulseForCausalLM, hook_points

README = Path(__file__).resolve().parents[1] / "README.md"


def test_hook_table_lists_exactly_the_hook_sites():
    text = README.read_text()
    documented = set(re.findall(r"^\| `([a-z_{}.0-9]+)` \|", text, flags=re.M))
    names = set()
    for gate in ("gru", "lstm"):
        cfg = PulseConfig(vocab_size=20, hidden_size=16, num_layers=2, num_heads=2, use_memory=True,
                          use_recurrent_state=True, num_states=2, state_dim=8, state_num_heads=2,
                          state_gate_type=gate)
        names |= {re.sub(r"blocks\.\d+\.", "blocks.{i}.", n) for n, _ in hook_points(PulseForCausalLM(cfg))}
    assert documented == names


def test_readme_python_examples_run(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks
    namespace: dict = {"tmpdir": str(tmp_path)}
    for number, code in enumerate(blocks):
        code = code.replace("max_new_tokens=10_000", "max_new_tokens=3")
        code = code.replace("hidden_size=768", "hidden_size=64").replace("capacity=512", "capacity=8")
        code = code.replace("torch.randn(768)", "torch.randn(64)").replace("torch.randn(2, 100, 768)", "torch.randn(1, 10, 64)")
        code = code.replace('"my-model"', "tmpdir").replace('"trace/"', "tmpdir + '/trace'").replace("hidden_size=256", "hidden_size=64")
        code = code.replace("max_new_tokens=50", "max_new_tokens=5")
        exec(compile(code, "README", "exec"), namespace)
        if number == 0:  # the API tour's first block trains one step
            assert torch.isfinite(namespace["outputs"]["loss"])
