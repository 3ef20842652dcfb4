"""The PULSE language model: embeddings -> UnifiedBlocks -> RMSNorm -> tied LM head.

    from pulse import PulseConfig, PulseForCausalLM
    model = PulseForCausalLM(PulseConfig(vocab_size=1000, hidden_size=256, num_layers=4))
    outputs = model(input_ids, labels=input_ids)        # {"logits", "loss", "state", ...}
    more = model(next_ids, state=outputs["state"])      # carry on where the last call ended
    text = model.generate(input_ids, max_new_tokens=50, temperature=0.8, top_k=50)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from pulse.config import PulseConfig, check_max_positions
from pulse.generation import GenerationMixin
from pulse.hooks import HookPoint
from pulse.layers.block import BlockState, UnifiedBlock
from pulse.layers.norm import RMSNorm
from pulse.pretrained import PretrainedMixin, register_model


def _map_nested(fn: Callable[[torch.Tensor], torch.Tensor], tree: Any) -> Any:
    if isinstance(tree, torch.Tensor):
        return fn(tree)
    if isinstance(tree, dict):
        return {k: _map_nested(fn, v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_map_nested(fn, v) for v in tree]
    return tree


@dataclass
class PulseState:
    """Everything a PULSE model carries from one call to the next: one dict per block
    (linear-attention S and z, conv cache, and the optional recurrent state, memory and
    state bank). Its size does not grow with the length of the text. ``positions``: input
    columns fed so far (padding included), checked against ``max_position_embeddings``."""

    layers: list[BlockState] = field(default_factory=list)
    positions: int = 0

    def detach(self) -> "PulseState":
        return PulseState(_map_nested(lambda t: t.detach(), self.layers), self.positions)

    def to(self, device: str | torch.device) -> "PulseState":
        return PulseState(_map_nested(lambda t: t.to(device), self.layers), self.positions)

    def num_bytes(self) -> int:
        total = 0

        def count(t: torch.Tensor) -> torch.Tensor:
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        _map_nested(count, self.layers)
        return total


def _validate_inputs(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, vocab_size: int) -> None:
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
        raise ValueError(f"input_ids: expected a LongTensor [batch, length], got "
                         f"{getattr(input_ids, 'shape', type(input_ids).__name__)}")
    if input_ids.dtype not in (torch.long, torch.int32, torch.int64):
        raise ValueError(f"input_ids: expected integer token ids, got {input_ids.dtype}")
    # the range check waits on the GPU, which a CUDA-graph capture forbids: it ran at the eager
    # warm-up steps, whose batches have the same source
    capturing = input_ids.is_cuda and torch.cuda.is_current_stream_capturing()
    if input_ids.numel() and not capturing and (input_ids.min() < 0 or input_ids.max() >= vocab_size):
        raise ValueError(f"input_ids: token ids must be in [0, {vocab_size}), got "
                         f"[{int(input_ids.min())}, {int(input_ids.max())}]")
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask: shape {tuple(attention_mask.shape)} does not match "
                         f"input_ids {tuple(input_ids.shape)}")


class PulseModel(nn.Module):
    """The PULSE backbone. forward(input_ids [B, T], attention_mask [B, T] | None,
    state | None) -> {"last_hidden_state": [B, T, D], "state": PulseState}.
    Hooks: hook_embed [B, T, D], hook_final [B, T, D], and those of each block
    (``blocks.{i}.…``)."""

    def __init__(self, config: PulseConfig) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.blocks = nn.ModuleList(UnifiedBlock(config=config) for _ in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.hook_embed = HookPoint(layout=("batch", "pos", "d_model"), kind="residual")
        self.hook_final = HookPoint(layout=("batch", "pos", "d_model"), kind="residual")

    def init_state(self, batch_size: int, device=None) -> PulseState:
        return PulseState([b.init_state(batch_size, device) for b in self.blocks])

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        state: PulseState | None = None,
        attn_mode: str = "auto",
    ) -> dict[str, Any]:
        # inside a CUDA-graph capture nothing may wait on the GPU: the data-dependent checks
        # ran at the eager warm-up steps, and a given mask is always applied (all ones = no-op)
        capturing = input_ids.is_cuda and torch.cuda.is_current_stream_capturing()
        if not capturing:
            _validate_inputs(input_ids, attention_mask, self.config.vocab_size)
        if state is not None and len(state.layers) != len(self.blocks):
            raise ValueError(f"state: has {len(state.layers)} layers, the model has {len(self.blocks)}")
        past = state.positions if state is not None else 0
        check_max_positions(self.config.max_position_embeddings, past, input_ids.shape[1])
        mask = None
        if attention_mask is not None and (capturing or not attention_mask.bool().all()):
            mask = attention_mask.to(torch.float32)
        x = self.hook_embed(self.embed_tokens(input_ids))
        if mask is not None:
            x = x * mask[..., None].to(x.dtype)
        layer_states = state.layers if state is not None else [None] * len(self.blocks)
        new_states = []
        for block, layer_state in zip(self.blocks, layer_states):
            x, new_state = block(x, mask, layer_state, attn_mode=attn_mode)
            new_states.append(new_state)
        x = self.hook_final(self.norm(x))
        return {"last_hidden_state": x, "state": PulseState(new_states, past + input_ids.shape[1])}


@register_model
class PulseForCausalLM(PretrainedMixin, GenerationMixin, PulseModel):
    """PULSE language model: the backbone (so hook names are ``blocks.{i}.…``) plus a head.
    forward(input_ids, attention_mask=None, labels=None, state=None)
    -> {"logits": [B, T, V], "state": PulseState, and with labels: "loss", "lm_loss",
    "aux_loss"}. ``labels`` are aligned with ``input_ids`` (the model shifts them);
    -100 and padding positions are ignored. ``loss = lm_loss + importance_reg * aux_loss``
    where aux_loss is the mean state importance (zero without a state bank)."""

    config_class = PulseConfig

    def __init__(self, config: PulseConfig) -> None:
        super().__init__(config)
        if not config.tie_word_embeddings:
            self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.apply(self._init_weights)
        # residual-stream writers start small so a deep stack starts near the identity
        scale = 1.0 / math.sqrt(2 * config.num_layers)
        for name, p in self.named_parameters():
            if name.endswith(("mixer_out.weight", "down_proj.weight", "out_proj.weight")):
                nn.init.normal_(p, std=config.initializer_range * scale)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=self.config.initializer_range)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def output_weight(self) -> torch.Tensor:
        return self.embed_tokens.weight if self.config.tie_word_embeddings else self.lm_head.weight

    def state_banks(self) -> Iterator[tuple[int, nn.Module]]:
        """(layer index, StateBank) for every block that has a state bank."""
        for i, block in enumerate(self.blocks):
            if hasattr(block, "states"):
                yield i, block.states

    def prune_low_importance_states(self, threshold: float | None = None) -> int:
        """Prune low-importance slots in every block; returns how many were pruned."""
        return sum(bank.prune_low_importance_states(threshold) for _, bank in self.state_banks())

    def aux_loss(self) -> torch.Tensor:
        losses = [bank.importance_loss() for _, bank in self.state_banks()]
        if not losses:
            return self.output_weight().new_zeros(())
        return torch.stack(losses).mean()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        state: PulseState | None = None,
        attn_mode: str = "auto",
    ) -> dict[str, Any]:
        out = super().forward(input_ids, attention_mask=attention_mask, state=state, attn_mode=attn_mode)
        hidden = out["last_hidden_state"]
        logits = F.linear(hidden, self.output_weight())  # [B, T, V]
        result: dict[str, Any] = {"logits": logits, "state": out["state"]}
        if labels is not None:
            result.update(causal_lm_loss(logits, labels, attention_mask))
            aux = self.aux_loss()
            result["aux_loss"] = aux
            result["loss"] = result["lm_loss"] + self.config.importance_reg * aux
        return result


def causal_lm_loss(
    logits: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """Next-token cross entropy: logits[:, t] predicts labels[:, t + 1]; -100 and padding ignored."""
    if labels.shape != logits.shape[:2]:
        raise ValueError(f"labels: shape {tuple(labels.shape)} does not match input_ids {tuple(logits.shape[:2])}")
    if attention_mask is not None:
        labels = labels.masked_fill(~attention_mask.bool(), -100)
    target = labels[:, 1:]
    loss = F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(), target.reshape(-1), ignore_index=-100
    )
    return {"lm_loss": loss}
