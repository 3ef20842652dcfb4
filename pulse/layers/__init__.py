"""The layers PULSE models are built from."""

from pulse.layers.attention import GroupedQueryAttention, MultiHeadAttention
from pulse.layers.block import UnifiedBlock
from pulse.layers.conv import LocalConv
from pulse.layers.ffn import SwiGLU
from pulse.layers.linear_attention import (
    LinearAttention,
    chunked_linear_attention,
    feature_map,
    recurrent_linear_attention_step,
)
from pulse.layers.memory import KeyValueMemory, MemoryAugmentedLayer
from pulse.layers.norm import RMSNorm
from pulse.layers.recurrent import RecurrentState
from pulse.layers.rotary import RotaryEmbedding, apply_rotary_pos_emb

__all__ = [
    "GroupedQueryAttention", "MultiHeadAttention", "UnifiedBlock", "LocalConv", "SwiGLU",
    "LinearAttention", "chunked_linear_attention", "feature_map", "recurrent_linear_attention_step",
    "KeyValueMemory", "MemoryAugmentedLayer", "RMSNorm", "RecurrentState", "RotaryEmbedding",
    "apply_rotary_pos_emb",
]
