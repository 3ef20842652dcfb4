"""The README's promises: its hook table matches the model, its code examples run."""

import re
from pathlib import Path

import pytest
import torch

from pulse import ConfigError, PulseConfig, PulseForCausalLM, hook_points

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


# The original READMEs' examples, quoted verbatim. Source: github.com/reicalasso/beyond_transformer,
# README.md in its "PULSE - Parallel Unified Linear State Engine" version ("### Language Modeling").
V1_README_LANGUAGE_MODELING = '''\
from pulse import PulseConfig, PulseForCausalLM

# Configure model
config = PulseConfig(
    vocab_size=32000,
    hidden_size=768,
    num_layers=12,
    num_heads=12,
    num_states=32,
    state_dim=768,
    max_position_embeddings=2048,
)

# Create model
model = PulseForCausalLM(config)

# Training
input_ids = torch.randint(0, 32000, (8, 512))
labels = input_ids.clone()
outputs = model(input_ids, labels=labels)
loss = outputs["loss"]

# Generation
generated = model.generate(
    input_ids[:, :10],
    max_length=100,
    temperature=0.8,
    top_k=50,
)
'''

# Same repository, README.md in its "Beyond Transformer: Neural State Machines" version (commit
# 00ef5a73aa284639798fa698c5fad65fc44e2acd): "Basic Usage", "Advanced Usage with Dynamic State
# Management" and "Complete Model Example".
NSM_README_EXAMPLES = [
    '''\
import torch
from nsm import StatePropagator, NSMLayer, StateManager

# Initialize state propagator
propagator = StatePropagator(
    state_dim=128,
    gate_type='gru',              # or 'lstm'
    enable_communication=True      # Enable state-to-state communication
)

# For single state update
batch_size = 32
prev_state = torch.randn(batch_size, 128)
new_input = torch.randn(batch_size, 128)
updated_state = propagator(prev_state, new_input)

# For multiple states with communication
num_states = 16
prev_states = torch.randn(batch_size, num_states, 128)
new_inputs = torch.randn(batch_size, num_states, 128)
updated_states = propagator(prev_states, new_inputs)
''',
    '''\
from nsm import NSMLayer, StateManager

# Create state manager with dynamic allocation
state_manager = StateManager(
    state_dim=128,
    max_states=64,
    initial_states=16,
    prune_threshold=0.3
)

# Create NSM layer
nsm_layer = NSMLayer(state_dim=128, token_dim=64, num_heads=4)

# Get current states
states = state_manager()

# During training, periodically prune and allocate states
pruned_count = state_manager.prune_low_importance_states()
allocated_count = state_manager.allocate_states(2)
''',
    '''\
from nsm.models import SimpleNSM

# Create a simple NSM model
model = SimpleNSM(
    input_dim=784,      # Input dimension (e.g., flattened MNIST)
    state_dim=128,      # State vector dimension
    num_states=16,      # Number of state nodes
    output_dim=10,      # Output dimension (e.g., classification)
    gate_type='gru'     # Gating mechanism
)

# Forward pass
batch_size = 32
x = torch.randn(batch_size, 784)
output = model(x)
''',
]


@pytest.mark.parametrize("names", ["PulseConfig, PulseForCausalLM", "LegacyPulseConfig, LegacyPulseForCausalLM"])
def test_v1_readme_language_modeling_runs(names):
    code = V1_README_LANGUAGE_MODELING.replace("PulseConfig, PulseForCausalLM", names)
    code = code.replace("config = PulseConfig(", f"config = {names.split(',')[0]}(")
    code = code.replace("model = PulseForCausalLM(", f"model = {names.split(', ')[1]}(")
    # the README's sizes (a 12-layer 768-wide model on 8 x 512 tokens) take minutes on 2 CPU cores:
    # smaller width, depth and batch here; every other value (the v1 fields num_states=32 and
    # max_position_embeddings=2048, the vocabulary and the generate call) is the README's
    for readme, small in [("hidden_size=768", "hidden_size=64"), ("num_layers=12", "num_layers=2"),
                          ("num_heads=12", "num_heads=4"), ("state_dim=768", "state_dim=64"),
                          ("(8, 512)", "(2, 64)")]:
        assert readme in code
        code = code.replace(readme, small)
    namespace: dict = {"torch": torch}
    exec(compile(code, "v1 README", "exec"), namespace)
    assert namespace["config"].max_position_embeddings == 2048 and namespace["config"].num_states == 32
    assert torch.isfinite(namespace["loss"])
    assert namespace["generated"].shape == (2, 100)


def test_nsm_readme_examples_run():
    namespace: dict = {}
    for code in NSM_README_EXAMPLES:
        # the NSM package is pulse.nsm here (SimpleNSM included); the rest runs as written
        code = code.replace("from nsm.models import", "from pulse.nsm import").replace("from nsm import", "from pulse.nsm import")
        exec(compile(code, "NSM README", "exec"), namespace)
    assert namespace["updated_state"].shape == (32, 128) and namespace["updated_states"].shape == (32, 16, 128)
    manager, states = namespace["state_manager"], namespace["states"]
    assert isinstance(states, torch.Tensor) and states.shape == (16, 128)  # the alive slots, as the README says
    torch.testing.assert_close(states, manager.slot_values[:16].detach(), atol=0, rtol=0)
    assert namespace["pruned_count"] == 0 and namespace["allocated_count"] == 2 and manager().shape == (18, 128)
    assert namespace["output"].shape == (32, 10)


def test_state_manager_extra_outputs_through_named_method():
    from pulse import StateManager

    manager = StateManager(state_dim=8, max_states=6, initial_states=4)
    imp, alive = manager.importance_and_alive()
    assert imp.shape == (6,) and alive.tolist() == [True] * 4 + [False] * 2
    manager.hook_alive.register_forward_hook(lambda m, i, o: o * torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0]))
    torch.testing.assert_close(manager(), manager.slot_values[[0, 2, 3]].detach())
    manager().sum().backward()  # differentiable w.r.t. the slot values
    assert manager.slot_values.grad[[0, 2, 3]].abs().sum() > 0 and manager.slot_values.grad[1].abs().sum() == 0


def test_max_position_embeddings_is_a_checked_length_limit():
    config = PulseConfig(vocab_size=20, hidden_size=16, num_layers=1, num_heads=2, max_position_embeddings=12)
    model = PulseForCausalLM(config).eval()
    ids = torch.randint(0, 20, (2, 12))
    first = model(ids[:, :8])
    assert first["state"].positions == 8 and first["state"].detach().positions == 8
    model(ids[:, 8:], state=first["state"])  # 8 + 4 = 12: allowed
    with pytest.raises(ValueError, match="max_position_embeddings=12"):
        model(torch.randint(0, 20, (2, 13)))
    with pytest.raises(ValueError, match="8 positions in the state"):
        model(torch.randint(0, 20, (2, 5)), state=first["state"])
    assert model.generate(ids[:, :4], max_length=12).shape == (2, 12)  # the last token is never fed
    unlimited = PulseForCausalLM(config.replace(max_position_embeddings=None)).eval()
    assert unlimited(torch.randint(0, 20, (1, 40)))["state"].positions == 40
    assert PulseConfig.from_dict(config.to_dict()).max_position_embeddings == 12
    with pytest.raises(ConfigError, match="max_position_embeddings"):
        PulseConfig(max_position_embeddings=0)


# Same repository and README version as V1_README_LANGUAGE_MODELING: its "### Basic Usage" block,
# quoted verbatim (SimplePulse and SequencePulse: pulse/simple.py).
V1_README_BASIC_USAGE = '''\
import torch
from pulse import SimplePulse, SequencePulse

# Simple classification model
model = SimplePulse(
    input_dim=784,      # Input features
    state_dim=256,      # State dimension
    num_states=32,      # Number of states
    output_dim=10,      # Output classes
    gate_type="gru",    # Gating mechanism
)

# Forward pass
x = torch.randn(32, 784)  # [batch_size, input_dim]
output = model(x)         # [batch_size, output_dim]

# Sequence processing
seq_model = SequencePulse(
    input_dim=64,
    state_dim=128,
    num_states=16,
    output_dim=10,
    output_mode="last",  # 'last', 'all', or 'mean'
)

seq_x = torch.randn(32, 100, 64)  # [batch, seq_len, input_dim]
seq_output = seq_model(seq_x)      # [batch, output_dim]
'''


def test_v1_readme_basic_usage_runs():
    namespace: dict = {}
    exec(compile(V1_README_BASIC_USAGE, "v1 README", "exec"), namespace)  # as written: the README's sizes
    assert namespace["output"].shape == (32, 10)
    assert namespace["seq_output"].shape == (32, 10)
    assert torch.isfinite(namespace["output"]).all() and torch.isfinite(namespace["seq_output"]).all()
