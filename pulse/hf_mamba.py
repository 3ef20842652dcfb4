"""A Hugging Face ``MambaForCausalLM`` as a registered model type (``model.type: mamba``), so that
``python -m pulse.train`` trains it like any PULSE family:

    model: {type: mamba, hidden_size: 64, num_layers: 2, state_size: 16}

The run's output folder is a plain Hugging Face ``save_pretrained`` folder (``config.json``
with ``model_type: "mamba"``, ``model.safetensors``) that ``transformers`` and
``probes.adapters.load_pretrained`` open; :func:`pulse.load_pretrained` opens it too (this
wrapper). ``transformers`` is the optional extra ``pip install -e '.[adapters]'``; it is
imported only when a model is built or loaded. The loss is :func:`pulse.causal_lm.causal_lm_loss`
on the task's labels (e.g. answers only), as for every PULSE family.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from pulse.config import ConfigBase, ConfigError
from pulse.io import CONFIG_NAME, CheckpointError, read_json_object
from pulse.pretrained import register_model

__all__ = ["HFMambaConfig", "HFMambaForCausalLM"]

_EXTRA = "pip install -e '.[adapters]'"


def _fast_selective_scan(hidden_states, dt, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                         return_last_state=False, **_ignored):
    """The recurrence of ``transformers``' reference ``mamba_selective_scan`` (same operations per
    step, same result), but reading the time steps through one ``unbind``: the reference indexes
    ``discrete_A[:, :, t]`` in its loop, whose backward writes a zero tensor of the whole
    sequence per step (quadratic in the length; ~10 s a step on 2 CPU cores at batch 64)."""
    import torch.nn.functional as F

    input_dtype = hidden_states.dtype
    if delta_bias is not None:
        dt = dt + delta_bias.to(dt.dtype)[..., None]
    if delta_softplus:
        dt = F.softplus(dt)
    B, C = B.transpose(1, 2), C.transpose(1, 2)
    discrete_A = torch.exp(A[None, :, None, :] * dt[:, :, :, None])
    deltaB_u = (dt[:, :, :, None] * B[:, None, :, :].float()) * hidden_states[:, :, :, None].float()
    ssm_state = hidden_states.new_zeros(hidden_states.shape[0], hidden_states.shape[1], A.shape[-1])
    outputs = []
    for a_t, bu_t, c_t in zip(discrete_A.unbind(2), deltaB_u.unbind(2), C.unbind(1)):
        ssm_state = a_t * ssm_state + bu_t
        outputs.append(torch.matmul(ssm_state.to(input_dtype), c_t.unsqueeze(-1))[:, :, 0])
    out = torch.stack(outputs, dim=-1)
    if D is not None:
        out = out + hidden_states * D[None, :, None]
    if z is not None:
        out = out * F.silu(z)
    return (out, ssm_state) if return_last_state else out


class _FastScan:
    """While active, the Mamba mixers of ``transformers`` use :func:`_fast_selective_scan`
    (only when the optimised ``mamba_ssm`` kernels are absent, i.e. the reference path)."""

    def __enter__(self):
        import transformers.models.mamba.modeling_mamba as mm

        self.mm, self.saved = mm, getattr(mm, "mamba_selective_scan", None)
        if self.saved is not None and not getattr(self.saved, "__module__", "").startswith("mamba_ssm"):
            mm.mamba_selective_scan = _fast_selective_scan
        return self

    def __exit__(self, *exc):
        if self.saved is not None:
            self.mm.mamba_selective_scan = self.saved
        return False


def _transformers():
    try:
        import transformers
    except ImportError as e:
        raise ConfigError(f"model.type mamba needs Hugging Face transformers, the optional extra: {_EXTRA}") from e
    return transformers


@dataclass
class HFMambaConfig(ConfigBase):
    """The fields of ``transformers.MambaConfig`` a run sets (names as in PULSE's configs
    where they exist: ``num_layers`` is Mamba's ``num_hidden_layers``)."""

    model_type: ClassVar[str] = "mamba"

    vocab_size: int = 256
    hidden_size: int = 64
    num_layers: int = 2
    state_size: int = 16
    expand: int = 2
    conv_kernel: int = 4
    time_step_rank: int | str = "auto"
    use_bias: bool = False
    use_conv_bias: bool = True
    rms_norm_eps: float = 1e-5
    initializer_range: float = 0.1
    tie_word_embeddings: bool = True
    residual_in_fp32: bool = True
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | None = None

    def validate(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_layers", "state_size", "expand", "conv_kernel"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{name}: must be a positive integer, got {v!r}")
        if self.time_step_rank != "auto" and (not isinstance(self.time_step_rank, int) or self.time_step_rank < 1):
            raise ConfigError(f"time_step_rank: must be 'auto' or a positive integer, got {self.time_step_rank!r}")

    def hf_config(self):
        return _transformers().MambaConfig(
            vocab_size=self.vocab_size, hidden_size=self.hidden_size, num_hidden_layers=self.num_layers,
            state_size=self.state_size, expand=self.expand, conv_kernel=self.conv_kernel,
            time_step_rank=self.time_step_rank, use_bias=self.use_bias, use_conv_bias=self.use_conv_bias,
            layer_norm_epsilon=self.rms_norm_eps, initializer_range=self.initializer_range,
            tie_word_embeddings=self.tie_word_embeddings, residual_in_fp32=self.residual_in_fp32,
            pad_token_id=self.pad_token_id, bos_token_id=self.bos_token_id, eos_token_id=self.eos_token_id,
            use_cache=False)

    @classmethod
    def from_hf(cls, hf) -> "HFMambaConfig":
        return cls(vocab_size=hf.vocab_size, hidden_size=hf.hidden_size, num_layers=hf.num_hidden_layers,
                   state_size=hf.state_size, expand=hf.expand, conv_kernel=hf.conv_kernel,
                   time_step_rank=hf.time_step_rank, use_bias=hf.use_bias, use_conv_bias=hf.use_conv_bias,
                   rms_norm_eps=hf.layer_norm_epsilon, initializer_range=hf.initializer_range,
                   tie_word_embeddings=hf.tie_word_embeddings, residual_in_fp32=hf.residual_in_fp32,
                   pad_token_id=hf.pad_token_id, bos_token_id=hf.bos_token_id, eos_token_id=hf.eos_token_id)


@register_model
class HFMambaForCausalLM(nn.Module):
    """``transformers.MambaForCausalLM`` (as ``self.hf``) with the registry's interface:
    ``forward(input_ids, attention_mask=, labels=)`` -> ``{"logits", "loss", "lm_loss"}``,
    ``save_pretrained`` (the Hugging Face folder) and ``from_pretrained``. With tied embeddings
    the state dict holds the embedding once (``hf.lm_head.weight`` is the same tensor)."""

    config_class = HFMambaConfig

    def __init__(self, config: HFMambaConfig, hf_model: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        self.hf = hf_model if hf_model is not None else _transformers().MambaForCausalLM(config.hf_config())

    _TIED = "hf.lm_head.weight"

    def state_dict(self, *args, **kwargs):
        sd = super().state_dict(*args, **kwargs)
        if self.config.tie_word_embeddings:
            prefix = kwargs.get("prefix", args[1] if len(args) > 1 else "")
            sd.pop(prefix + self._TIED, None)
        return sd

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        state_dict = dict(state_dict)
        if self.config.tie_word_embeddings:
            state_dict.setdefault(self._TIED, state_dict["hf.backbone.embeddings.weight"])
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None) -> dict[str, Any]:
        from pulse.causal_lm import causal_lm_loss, validate_inputs

        validate_inputs(input_ids, attention_mask, self.config.vocab_size)
        with _FastScan():
            logits = self.hf(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
        out: dict[str, Any] = {"logits": logits}
        if labels is not None:
            out.update(causal_lm_loss(logits, labels, attention_mask))
            out["loss"] = out["lm_loss"]
        return out

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.hf.save_pretrained(directory, safe_serialization=True)
        return directory

    def init_from_folder(self, folder: str | os.PathLike) -> None:
        """``train.init_from``: this run's weights from another run's folder of the same config."""
        theirs = type(self).from_pretrained(folder)
        a, b = theirs.config.to_dict(), self.config.to_dict()
        diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and k not in ("time_step_rank",))
        if diff:
            raise ConfigError(f"train.init_from: {folder}'s model config differs from this run's in "
                              + ", ".join(f"{k} ({a.get(k)!r} vs {b.get(k)!r})" for k in diff))
        self.hf.load_state_dict(theirs.hf.state_dict())

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device: str | torch.device = "cpu"):
        directory = Path(directory)
        cfg = read_json_object(directory / CONFIG_NAME, f"{directory}: no {CONFIG_NAME}")
        if cfg.get("model_type") != HFMambaConfig.model_type:
            raise CheckpointError(f"{directory}: model_type {cfg.get('model_type')!r}, expected 'mamba'")
        try:
            hf = _transformers().MambaForCausalLM.from_pretrained(directory, local_files_only=True)
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            raise CheckpointError(f"{directory}: could not load the Mamba model: {e}") from e
        return cls(HFMambaConfig.from_hf(hf.config), hf_model=hf).to(device).eval()
