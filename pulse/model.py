"""The PULSE language model: embeddings -> UnifiedBlocks -> RMSNorm -> tied LM head, on the
causal-LM skeleton of :mod:`pulse.causal_lm`.

    from pulse import PulseConfig, PulseForCausalLM
    model = PulseForCausalLM(PulseConfig(vocab_size=1000, hidden_size=256, num_layers=4))
    outputs = model(input_ids, labels=input_ids)        # {"logits", "loss", "state", ...}
    more = model(next_ids, state=outputs["state"])      # carry on where the last call ended
    text = model.generate(input_ids, max_new_tokens=50, temperature=0.8, top_k=50)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from pulse.causal_lm import CausalLM, CausalLMBackbone, causal_lm_loss, map_nested, validate_inputs
from pulse.config import PulseConfig
from pulse.layers.block import BlockState, UnifiedBlock
from pulse.pretrained import register_model

# the names other modules imported from here before pulse.causal_lm existed
_map_nested = map_nested
_validate_inputs = validate_inputs
__all__ = ["PulseState", "PulseModel", "PulseForCausalLM", "causal_lm_loss"]


@dataclass
class PulseState:
    """Everything a PULSE model carries from one call to the next: one dict per block
    (linear-attention S and z, conv cache, and the optional recurrent state, memory and
    state bank). Its size does not grow with the length of the text. ``positions``: input
    columns fed so far (padding included), checked against ``max_position_embeddings``."""

    layers: list[BlockState] = field(default_factory=list)
    positions: int = 0

    def detach(self) -> "PulseState":
        return PulseState(map_nested(lambda t: t.detach(), self.layers), self.positions)

    def to(self, device: str | torch.device) -> "PulseState":
        return PulseState(map_nested(lambda t: t.to(device), self.layers), self.positions)

    def num_bytes(self) -> int:
        total = 0

        def count(t: torch.Tensor) -> torch.Tensor:
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        map_nested(count, self.layers)
        return total


class PulseModel(CausalLMBackbone):
    """The PULSE backbone: the causal-LM skeleton (:class:`pulse.causal_lm.CausalLMBackbone`)
    with :class:`~pulse.layers.block.UnifiedBlock` blocks. forward(input_ids [B, T],
    attention_mask [B, T] | None, state | None, attn_mode="auto") -> {"last_hidden_state":
    [B, T, D], "state": PulseState}. Padding embeddings are zeroed before the first block.
    Hooks: hook_embed [B, T, D], hook_final [B, T, D], and those of each block
    (``blocks.{i}.…``)."""

    config_class = PulseConfig
    embedding_hooks = True
    mask_embeddings = True

    def make_block(self, config: PulseConfig, index: int) -> UnifiedBlock:
        return UnifiedBlock(config=config)

    def init_state(self, batch_size: int, device=None) -> PulseState:
        return PulseState([b.init_state(batch_size, device) for b in self.blocks])

    def layer_states(self, state: PulseState | None) -> list:
        return state.layers if state is not None else [None] * len(self.blocks)

    def pack_state(self, layers: list, positions: int) -> PulseState:
        return PulseState(layers, positions)

    def past_positions(self, state: PulseState) -> int:
        return state.positions

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        state: PulseState | None = None,
        attn_mode: str = "auto",
    ) -> dict[str, Any]:
        return super().forward(input_ids, attention_mask=attention_mask, state=state, attn_mode=attn_mode)


@register_model
class PulseForCausalLM(CausalLM, PulseModel):
    """PULSE language model: the backbone (so hook names are ``blocks.{i}.…``) plus a head.
    forward(input_ids, attention_mask=None, labels=None, state=None, attn_mode="auto")
    -> {"logits": [B, T, V], "state": PulseState, and with labels: "loss", "lm_loss",
    "aux_loss"}. ``labels`` are aligned with ``input_ids`` (the model shifts them);
    -100 and padding positions are ignored. ``loss = lm_loss + importance_reg * aux_loss``
    where aux_loss is the mean state importance (zero without a state bank). The head is tied
    to the embeddings unless ``tie_word_embeddings=False``."""

    config_class = PulseConfig
    residual_projections = ("mixer_out.weight", "down_proj.weight", "out_proj.weight")

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        state: PulseState | None = None,
        attn_mode: str = "auto",
    ) -> dict[str, Any]:
        return super().forward(input_ids, attention_mask=attention_mask, labels=labels, state=state,
                               attn_mode=attn_mode)
