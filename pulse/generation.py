"""Generation shared by every causal LM in the project (Hugging Face keywords).

A model provides ``forward(input_ids, attention_mask=None, state=None) -> {"logits", "state"}``.
The prompt is processed once; each new token then costs one step on the carried state
(recurrent state for PULSE, a KV cache for the Transformer baseline).
"""

from __future__ import annotations

from typing import Iterator

import torch


def process_logits(
    logits: torch.Tensor,
    seen: torch.Tensor | None,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    repetition_penalty: float,
) -> torch.Tensor:
    """logits [B, V] -> adjusted logits [B, V] (-inf where a token may not be drawn)."""
    logits = logits.float()
    if repetition_penalty != 1.0 and seen is not None:
        penalised = torch.where(logits > 0, logits / repetition_penalty, logits * repetition_penalty)
        logits = torch.where(seen, penalised, logits)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        # drop a token when the tokens ranked above it already reach top_p
        drop_sorted = (cumulative - sorted_logits.softmax(-1)) >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def _check_generation_args(temperature, top_k, top_p, repetition_penalty, max_new_tokens) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature: must be > 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k: must be >= 1, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p: must be in (0, 1], got {top_p}")
    if not repetition_penalty > 0:
        raise ValueError(f"repetition_penalty: must be > 0, got {repetition_penalty}")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens: must be >= 0, got {max_new_tokens}")


def last_real_logits(logits: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """logits [B, T, V] -> the logits at each row's last real token [B, V]."""
    if attention_mask is None:
        return logits[:, -1]
    T = attention_mask.shape[1]
    positions = torch.arange(T, device=logits.device).expand_as(attention_mask)
    last = torch.where(attention_mask.bool(), positions, torch.full_like(positions, -1)).max(1).values
    if (last < 0).any():
        raise ValueError("attention_mask: a row has no real token")
    return logits[torch.arange(logits.shape[0], device=logits.device), last]


class GenerationMixin:
    """``generate`` and ``generate_stream`` for a model with a carried state."""

    @torch.no_grad()
    def generate_stream(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int = 20,
        do_sample: bool | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        repetition_penalty: float = 1.0,
        eos_token_id: int | None = None,
        pad_token_id: int | None = None,
        attention_mask: torch.Tensor | None = None,
        state=None,
        generator: torch.Generator | None = None,
    ) -> Iterator[torch.Tensor]:
        """Yield the next token ids [B], one step at a time, in constant memory.

        Only the model state and a [B, V] "seen" mask (for the repetition penalty) are kept,
        never the growing sequence. ``do_sample=None`` samples when temperature, top_k or
        top_p was given, as the original PULSE API did; otherwise decoding is greedy.
        """
        if input_ids.dim() != 2 or input_ids.shape[1] == 0:
            raise ValueError(f"input_ids: expected shape [batch, length>0], got {tuple(input_ids.shape)}")
        _check_generation_args(temperature, top_k, top_p, repetition_penalty, max_new_tokens)
        if do_sample is None:
            do_sample = temperature != 1.0 or top_k is not None or top_p is not None
        eos = eos_token_id if eos_token_id is not None else getattr(self.config, "eos_token_id", None)
        pad = pad_token_id if pad_token_id is not None else getattr(self.config, "pad_token_id", 0)
        was_training = self.training
        self.eval()
        try:
            out = self(input_ids, attention_mask=attention_mask, state=state)
            logits, state = last_real_logits(out["logits"], attention_mask), out["state"]
            B, V = logits.shape
            seen = None
            if repetition_penalty != 1.0:
                real = torch.ones_like(input_ids) if attention_mask is None else attention_mask.long()
                seen = torch.zeros(B, V, dtype=torch.long, device=logits.device)
                seen = seen.scatter_reduce(1, input_ids, real, reduce="amax").bool()
            finished = torch.zeros(B, dtype=torch.bool, device=logits.device)
            for step in range(max_new_tokens):
                scores = process_logits(logits, seen, temperature if do_sample else 1.0,
                                        top_k if do_sample else None, top_p if do_sample else None,
                                        repetition_penalty)
                if do_sample:
                    next_ids = torch.multinomial(scores.softmax(-1), 1, generator=generator).squeeze(1)
                else:
                    next_ids = scores.argmax(-1)
                next_ids = torch.where(finished, torch.full_like(next_ids, pad), next_ids)
                yield next_ids
                feed = ~finished  # rows already finished feed padding, which leaves their state alone
                if seen is not None:
                    seen |= torch.nn.functional.one_hot(next_ids, V).bool() & feed[:, None]
                if eos is not None:
                    finished = finished | (next_ids == eos)
                if finished.all() or step == max_new_tokens - 1:
                    return
                out = self(next_ids[:, None], attention_mask=feed.long()[:, None], state=state)
                logits, state = out["logits"][:, -1], out["state"]
        finally:
            self.train(was_training)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int | None = None,
        max_length: int | None = None,
        do_sample: bool | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        repetition_penalty: float = 1.0,
        eos_token_id: int | None = None,
        pad_token_id: int | None = None,
        attention_mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Return the prompt followed by up to ``max_new_tokens`` new tokens, [B, T + n].

        ``max_length`` counts the prompt too; give one of the two (default: 20 new tokens).
        Rows that produced ``eos_token_id`` are filled with ``pad_token_id`` afterwards.
        """
        if max_new_tokens is not None and max_length is not None:
            raise ValueError("max_new_tokens and max_length: give only one of them")
        if max_length is not None:
            max_new_tokens = max_length - input_ids.shape[1]
            if max_new_tokens < 0:
                raise ValueError(f"max_length: {max_length} is shorter than the prompt ({input_ids.shape[1]})")
        if max_new_tokens is None:
            max_new_tokens = 20
        new = list(self.generate_stream(
            input_ids, max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature,
            top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty,
            eos_token_id=eos_token_id, pad_token_id=pad_token_id, attention_mask=attention_mask,
            generator=generator,
        ))
        if not new:
            return input_ids
        return torch.cat([input_ids, torch.stack(new, dim=1)], dim=1)
