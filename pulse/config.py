"""Model configuration: one validated dataclass, JSON round trip, clear errors."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pulse.io import atomic_write_text


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field."""


def _check(condition: bool, field_name: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{field_name}: {message}")


class ConfigBase:
    """Shared JSON behaviour for every config dataclass in the project."""

    model_type: ClassVar[str] = ""

    def validate(self) -> None:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    def __post_init__(self) -> None:
        self.validate()

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["model_type"] = self.model_type
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        if not isinstance(data, dict):
            raise ConfigError(f"config: expected a JSON object, got {type(data).__name__}")
        data = dict(data)
        model_type = data.pop("model_type", cls.model_type)
        if model_type != cls.model_type:
            raise ConfigError(
                f"model_type: this is a {model_type!r} config, expected {cls.model_type!r}"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{', '.join(unknown)}: unknown field(s) for {cls.__name__}")
        return cls(**data)

    def to_json_file(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_json_file(cls, path: str | os.PathLike):
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except json.JSONDecodeError as e:
            raise ConfigError(f"config.json: not valid JSON ({e})") from e
        return cls.from_dict(data)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


def default_intermediate_size(hidden_size: int) -> int:
    """SwiGLU width with about the parameters of a 4x MLP: 8/3 * hidden, rounded up to 32."""
    return 32 * ((8 * hidden_size // 3 + 31) // 32)


def check_max_positions(limit: int | None, past: int, new: int) -> None:
    """Raise ValueError when ``past`` positions (already in the carried state) plus ``new``
    input columns exceed the config's ``max_position_embeddings`` (``None``: no limit)."""
    if limit is not None and past + new > limit:
        raise ValueError(
            f"input_ids: {past} positions in the state + {new} new = {past + new} exceed "
            f"max_position_embeddings={limit} (set it to None for no limit)"
        )


def _positive_int(cfg: Any, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        _check(
            isinstance(value, int) and not isinstance(value, bool) and value > 0,
            name,
            f"must be a positive integer, got {value!r}",
        )


@dataclass
class PulseConfig(ConfigBase):
    """Configuration of a PULSE language model.

    Every block is RMSNorm -> [LocalConv (+) LinearAttention] -> fusion gate -> residual,
    then optional sublayers (recurrent state, key-value memory, state bank), each
    RMSNorm -> sublayer -> residual, then RMSNorm -> SwiGLU -> residual.
    """

    model_type: ClassVar[str] = "pulse"

    vocab_size: int = 256
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int | None = None  # default: 8/3 * hidden, rounded to 32
    conv_kernel_size: int = 4
    # false: the block mixes tokens with the local convolution only (no linear attention), so
    # nothing in the mixer reaches further back than conv_kernel_size tokens
    use_linear_attention: bool = True
    chunk_size: int = 64
    # per-head decay gamma_h is initialised with half-lives spread geometrically in this range
    decay_half_life_min: float = 4.0
    decay_half_life_max: float = 256.0
    linear_attn_eps: float = 1e-6
    rms_norm_eps: float = 1e-6
    dropout: float = 0.0
    initializer_range: float = 0.02
    tie_word_embeddings: bool = True
    # recurrent state: one gated state vector per block, carried across calls
    use_recurrent_state: bool = False
    # key-value memory: a fixed-capacity circular store per block, causal top-k reads
    use_memory: bool = False
    memory_capacity: int = 64
    memory_top_k: int = 4
    # state bank (Neural State Machine slots inside the language model); 0 = off
    num_states: int = 0
    state_dim: int | None = None  # default: hidden_size
    max_states: int | None = None  # default: num_states
    state_gate_type: str = "gru"
    state_num_heads: int = 4
    state_communication: bool = True
    # 'mean': a slot is written with the routed mean at full strength; 'mass': the write is
    # scaled by the routing mass the slot received in the chunk (see pulse.nsm.state_bank)
    state_write_mode: str = "mean"
    prune_threshold: float = 0.3
    importance_reg: float = 0.0
    # special tokens
    pad_token_id: int = 0
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    # PULSE has no position embeddings (nothing to size); this field of the v1 config is kept
    # as the longest sequence the model accepts: forward raises ValueError when the positions
    # already in the carried state plus the new input_ids columns exceed it. None: no limit.
    max_position_embeddings: int | None = None

    def validate(self) -> None:
        _positive_int(
            self, "vocab_size", "hidden_size", "num_layers", "num_heads",
            "conv_kernel_size", "chunk_size", "memory_capacity", "memory_top_k", "state_num_heads",
        )
        _check(self.hidden_size % self.num_heads == 0, "num_heads",
               f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.intermediate_size is not None:
            _positive_int(self, "intermediate_size")
        _check(0 < self.decay_half_life_min <= self.decay_half_life_max, "decay_half_life_min",
               "need 0 < decay_half_life_min <= decay_half_life_max")
        _check(self.linear_attn_eps > 0, "linear_attn_eps", "must be > 0")
        _check(self.rms_norm_eps > 0, "rms_norm_eps", "must be > 0")
        _check(0.0 <= self.dropout < 1.0, "dropout", f"must be in [0, 1), got {self.dropout}")
        _check(self.initializer_range > 0, "initializer_range", "must be > 0")
        _check(isinstance(self.num_states, int) and self.num_states >= 0, "num_states",
               f"must be a non-negative integer, got {self.num_states!r}")
        if self.state_dim is not None:
            _positive_int(self, "state_dim")
        if self.max_states is not None:
            _positive_int(self, "max_states")
            _check(self.max_states >= self.num_states, "max_states",
                   f"must be >= num_states ({self.num_states}), got {self.max_states}")
        _check(self.state_write_mode in ("mean", "mass"), "state_write_mode",
               f"must be 'mean' or 'mass', got {self.state_write_mode!r}")
        _check(isinstance(self.use_linear_attention, bool), "use_linear_attention",
               f"must be true or false, got {self.use_linear_attention!r}")
        _check(self.state_gate_type in ("gru", "lstm"), "state_gate_type",
               f"must be 'gru' or 'lstm', got {self.state_gate_type!r}")
        if self.num_states:
            _check(self.resolved_state_dim % self.state_num_heads == 0, "state_num_heads",
                   f"state_dim {self.resolved_state_dim} is not divisible by state_num_heads "
                   f"{self.state_num_heads}")
        _check(0.0 <= self.prune_threshold <= 1.0, "prune_threshold", "must be in [0, 1]")
        _check(self.importance_reg >= 0.0, "importance_reg", "must be >= 0")
        if self.max_position_embeddings is not None:
            _positive_int(self, "max_position_embeddings")
        for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
            value = getattr(self, name)
            if value is not None:
                _check(isinstance(value, int) and 0 <= value < self.vocab_size, name,
                       f"must be a token id in [0, {self.vocab_size}), got {value!r}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def resolved_intermediate_size(self) -> int:
        if self.intermediate_size is not None:
            return self.intermediate_size
        return default_intermediate_size(self.hidden_size)

    @property
    def resolved_state_dim(self) -> int:
        return self.state_dim if self.state_dim is not None else self.hidden_size

    @property
    def resolved_max_states(self) -> int:
        return self.max_states if self.max_states is not None else self.num_states
