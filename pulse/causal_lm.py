"""One causal-LM skeleton for every model family of the project.

A family is a block definition plus two small classes on the two bases here::

    class MyModel(CausalLMBackbone):               # embed_tokens -> blocks -> norm
        config_class = MyConfig
        def make_block(self, config, index): return MyBlock(config)

    @register_model                                # loadable and trainable by MyConfig.model_type
    class MyForCausalLM(CausalLM, MyModel):        # + head, loss, init, save/load, generate
        residual_projections = ("o_proj.weight", "down_proj.weight")

A block is ``forward(x [B, T, D], mask [B, T] float | None, state | None, **block_kwargs) ->
(x, state)``. The config needs ``vocab_size``, ``hidden_size``, ``num_layers``,
``rms_norm_eps`` and ``initializer_range``; ``tie_word_embeddings`` (default tied),
``importance_reg`` and ``max_position_embeddings`` are read when present.

The output keys are the same for every family:

* backbone: ``{"last_hidden_state": [B, T, D], "state": ...}``;
* causal LM: ``{"logits": [B, T, V], "state": ...}`` and with ``labels`` also ``"lm_loss"``
  (next-token cross entropy, :func:`causal_lm_loss`), ``"loss"`` and, for families that
  report it (``reports_aux_loss``), ``"aux_loss"``: the mean state-bank importance (zero
  without a bank), so that ``loss = lm_loss + importance_reg * aux_loss``.

Module names (hence state-dict keys and hook names) are ``embed_tokens``, ``blocks.{i}.…``,
``norm``, ``lm_head`` (untied only) and, for families with ``embedding_hooks``,
``hook_embed`` / ``hook_final`` [B, T, D].
"""

from __future__ import annotations

import math
from typing import Any, Callable, ClassVar, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from pulse.config import check_max_positions
from pulse.generation import GenerationMixin
from pulse.hooks import HookPoint
from pulse.layers.norm import RMSNorm
from pulse.pretrained import PretrainedMixin

__all__ = ["CausalLMBackbone", "CausalLM", "causal_lm_loss", "validate_inputs", "init_weights", "map_nested"]


def map_nested(fn: Callable[[torch.Tensor], torch.Tensor], tree: Any) -> Any:
    """``fn`` applied to every tensor in nested dicts and lists (other leaves kept)."""
    if isinstance(tree, torch.Tensor):
        return fn(tree)
    if isinstance(tree, dict):
        return {k: map_nested(fn, v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [map_nested(fn, v) for v in tree]
    return tree


def validate_inputs(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, vocab_size: int) -> None:
    """ValueError naming the argument for ids that are not [B, T] integers in [0, vocab_size)
    or a mask of another shape. Nothing here waits on the GPU under a CUDA-graph capture."""
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


def init_weights(module: nn.Module, initializer_range: float, num_layers: int,
                 residual_projections: Iterable[str] = ()) -> None:
    """The project's init: every Linear and Embedding weight ~ N(0, initializer_range), Linear
    biases zero; then the parameters whose names end with one of ``residual_projections``
    (the residual-stream writers) ~ N(0, initializer_range / sqrt(2 * num_layers)), so that
    a deep stack starts near the identity. Other parameters keep their own init."""

    def base(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=initializer_range)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    module.apply(base)
    suffixes = tuple(residual_projections)
    scale = 1.0 / math.sqrt(2 * num_layers)
    for name, p in module.named_parameters():
        if suffixes and name.endswith(suffixes):
            nn.init.normal_(p, std=initializer_range * scale)


class CausalLMBackbone(nn.Module):
    """``embed_tokens`` -> ``blocks`` -> ``norm``: forward(input_ids [B, T], attention_mask
    [B, T] | None, state | None, **block_kwargs) -> {"last_hidden_state": [B, T, D], "state"}.

    A family sets ``config_class`` and ``make_block``, and where it differs from the default:
    ``embedding_hooks`` (hook_embed after the embedding, hook_final after the norm),
    ``mask_embeddings`` (padding embeddings zeroed before the first block), and the carried
    state: ``layer_states`` (the per-block states in a given state), ``pack_state`` (the
    state returned) and ``past_positions`` (input columns already in a state, checked with
    the new ones against ``config.max_position_embeddings`` when the config has one).
    The default state is a list with one entry per block."""

    config_class: ClassVar[Any] = None
    embedding_hooks: ClassVar[bool] = False
    mask_embeddings: ClassVar[bool] = False

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.blocks = nn.ModuleList(self.make_block(config, i) for i in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        if self.embedding_hooks:
            self.hook_embed = HookPoint(layout=("batch", "pos", "d_model"), kind="residual")
            self.hook_final = HookPoint(layout=("batch", "pos", "d_model"), kind="residual")

    # ---- what a family defines
    def make_block(self, config: Any, index: int) -> nn.Module:
        raise NotImplementedError(f"{type(self).__name__}: a family defines make_block(config, index)")

    def layer_states(self, state: Any) -> list:
        return list(state) if state is not None else [None] * len(self.blocks)

    def pack_state(self, layers: list, positions: int) -> Any:
        return layers

    def past_positions(self, state: Any) -> int:
        return 0

    # ---- the skeleton
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                state: Any = None, **block_kwargs: Any) -> dict[str, Any]:
        validate_inputs(input_ids, attention_mask, self.config.vocab_size)
        return self.forward_embeddings(self.embed_tokens(input_ids), attention_mask, state, **block_kwargs)

    def forward_embeddings(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None = None,
                           state: Any = None, **block_kwargs: Any) -> dict[str, Any]:
        """The backbone from given input embeddings [B, T, D] on (what ``forward`` runs after
        the embedding lookup; models on continuous inputs use it directly)."""
        B, T = inputs_embeds.shape[:2]
        if attention_mask is not None and tuple(attention_mask.shape) != (B, T):
            raise ValueError(f"attention_mask: shape {tuple(attention_mask.shape)} does not match the "
                             f"inputs {(B, T)}")
        layers = self.layer_states(state)
        if len(layers) != len(self.blocks):
            raise ValueError(f"state: has {len(layers)} layers, the model has {len(self.blocks)}")
        past = self.past_positions(state) if state is not None else 0
        check_max_positions(getattr(self.config, "max_position_embeddings", None), past, T)
        # inside a CUDA-graph capture nothing may wait on the GPU: a given mask is always
        # applied there (all ones = no-op); elsewhere an all-ones mask is dropped
        capturing = inputs_embeds.is_cuda and torch.cuda.is_current_stream_capturing()
        mask = None
        if attention_mask is not None and (capturing or not attention_mask.bool().all()):
            mask = attention_mask.to(torch.float32)
        x = inputs_embeds
        if self.embedding_hooks:
            x = self.hook_embed(x)
        if self.mask_embeddings and mask is not None:
            x = x * mask[..., None].to(x.dtype)
        new_layers = []
        for block, layer_state in zip(self.blocks, layers):
            x, layer_state = block(x, mask, layer_state, **block_kwargs)
            new_layers.append(layer_state)
        x = self.norm(x)
        if self.embedding_hooks:
            x = self.hook_final(x)
        return {"last_hidden_state": x, "state": self.pack_state(new_layers, past + T)}


class CausalLM(PretrainedMixin, GenerationMixin, CausalLMBackbone):
    """A backbone plus the language-model head: forward(input_ids, attention_mask=None,
    labels=None, state=None, **block_kwargs) -> {"logits", "state"} (+ the losses with
    ``labels``; see the module doc). ``labels`` are aligned with ``input_ids`` (the model
    shifts them); -100 and padding positions are ignored. The head is tied to the embeddings
    unless ``config.tie_word_embeddings`` is false (then ``lm_head``). Weights start from
    :func:`init_weights` with the family's ``residual_projections``. ``save_pretrained``,
    ``from_pretrained``, ``generate`` and ``generate_stream`` come with it."""

    residual_projections: ClassVar[tuple[str, ...]] = ("o_proj.weight", "down_proj.weight", "out_proj.weight")
    reports_aux_loss: ClassVar[bool] = True

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        if not getattr(config, "tie_word_embeddings", True):
            self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.init_weights()

    def init_weights(self) -> None:
        init_weights(self, self.config.initializer_range, self.config.num_layers, self.residual_projections)

    def output_weight(self) -> torch.Tensor:
        """The [V, D] matrix of the head (the embeddings when tied)."""
        return self.lm_head.weight if hasattr(self, "lm_head") else self.embed_tokens.weight

    def state_banks(self) -> Iterator[tuple[int, nn.Module]]:
        """(layer index, StateBank) for every block that has a state bank."""
        for i, block in enumerate(self.blocks):
            if hasattr(block, "states"):
                yield i, block.states

    def prune_low_importance_states(self, threshold: float | None = None) -> int:
        """Prune low-importance slots in every block; returns how many were pruned."""
        return sum(bank.prune_low_importance_states(threshold) for _, bank in self.state_banks())

    def aux_loss(self) -> torch.Tensor:
        """Mean state-bank importance over the banks (zero without a bank)."""
        losses = [bank.importance_loss() for _, bank in self.state_banks()]
        if not losses:
            return self.output_weight().new_zeros(())
        return torch.stack(losses).mean()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, state: Any = None, **block_kwargs: Any) -> dict[str, Any]:
        out = super().forward(input_ids, attention_mask=attention_mask, state=state, **block_kwargs)
        logits = F.linear(out["last_hidden_state"], self.output_weight())  # [B, T, V]
        result: dict[str, Any] = {"logits": logits, "state": out["state"]}
        if labels is not None:
            result.update(causal_lm_loss(logits, labels, attention_mask))
            if self.reports_aux_loss:
                aux = self.aux_loss()
                result["aux_loss"] = aux
                result["loss"] = result["lm_loss"] + getattr(self.config, "importance_reg", 0.0) * aux
            else:
                result["loss"] = result["lm_loss"]
        return result
