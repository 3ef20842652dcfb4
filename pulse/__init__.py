"""PULSE: state-based sequence models whose every internal decision is observable."""

from pulse.causal_lm import CausalLM, CausalLMBackbone, causal_lm_loss
from pulse.config import ConfigError, PulseConfig
from pulse.hooks import HookPoint, hook_points
from pulse.io import CheckpointError
from pulse.layers import (
    GroupedQueryAttention,
    KeyValueMemory,
    LinearAttention,
    LocalConv,
    MemoryAugmentedLayer,
    MultiHeadAttention,
    RecurrentState,
    RMSNorm,
    RotaryEmbedding,
    SwiGLU,
    UnifiedBlock,
    apply_rotary_pos_emb,
)
from pulse.legacy import LegacyPulseConfig, LegacyPulseForCausalLM, LegacyPulseModel
from pulse.model import PulseForCausalLM, PulseModel, PulseState
from pulse.nsm import (
    AdaptiveStateAllocator,
    HierarchicalStateManager,
    HybridAttention,
    NSMLayer,
    SimpleNSM,
    SparseStateAttention,
    StateBank,
    StateManager,
    StatePropagator,
    TokenToStateRouter,
)
from pulse.pretrained import load_pretrained, register_model, registered_models
from pulse.simple import SequencePulse, SimplePulse
from pulse.transformer import TransformerConfig, TransformerForCausalLM
from pulse.hf_mamba import HFMambaConfig, HFMambaForCausalLM  # registers model.type mamba (transformers imported lazily)

__version__ = "0.1.0"

__all__ = [
    "ConfigError", "PulseConfig", "HookPoint", "hook_points", "CheckpointError",
    "GroupedQueryAttention", "KeyValueMemory", "LinearAttention", "LocalConv",
    "MemoryAugmentedLayer", "MultiHeadAttention", "RecurrentState", "RMSNorm", "RotaryEmbedding",
    "SwiGLU", "UnifiedBlock", "apply_rotary_pos_emb", "PulseForCausalLM", "PulseModel",
    "PulseState", "load_pretrained", "AdaptiveStateAllocator", "HierarchicalStateManager",
    "HybridAttention", "NSMLayer", "SimpleNSM", "SparseStateAttention", "StateBank", "StateManager",
    "StatePropagator", "TokenToStateRouter", "LegacyPulseConfig", "LegacyPulseForCausalLM",
    "LegacyPulseModel", "TransformerConfig", "TransformerForCausalLM", "CausalLM", "CausalLMBackbone",
    "causal_lm_loss", "register_model", "registered_models", "SimplePulse", "SequencePulse",
]
