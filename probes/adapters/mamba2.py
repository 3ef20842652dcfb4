"""Adapter for ``transformers.Mamba2ForCausalLM`` (Mamba-2, state space duality).

The mixer core of each layer is the SSD scan per head h (scalar decay rate ``A_h < 0``), with
head_dim p and state index n, B and C shared by the heads of a group (Dao & Gu 2024, eq. 1-2)::

    h_t[p, n] = exp(Δ_t A_h) h_{t-1}[p, n] + Δ_t x_t[p] B_t[n]
    y_t[p]    = sum_n h_t[p, n] C_t[n] + D_h x_t[p]

then ``out_proj(gated_rmsnorm(y, z))``. From a zero state this is an exact attention per head
(the "1-semiseparable" matrix of SSD)::

    y_t = sum_{s<=t} M[h, t, s] x_s,   M[h, t, s] = (C_t . B_s) exp(sum_{r=s+1..t} Δ_r A_h) Δ_s + D_h [s = t]

:func:`implicit_attention` computes M ``[batch, head, t, s]`` in float64; the adapter's
``implicit_attention`` compares ``M @ x`` with the input the module's gated norm receives (the
scan's own output, ungated).

Hook sites (``blocks.{i}.mixer.…``; ``w`` = writable):

=================  ===================================  ===============  ============================
site               layout                               kind             value
=================  ===================================  ===============  ============================
hook_decay (w)     (head,)                              decay            exp(A_h), per unit Δ
hook_gate          (batch, pos, head, d_v)              gate             silu(z_t)
hook_x             (batch, pos, head, d_v)              attention_input  x_t after conv + act (values)
hook_B             (batch, pos, head, d_k)              attention_input  B_t of the head's group (keys)
hook_C             (batch, pos, head, d_k)              attention_input  C_t (queries)
hook_dt            (batch, pos, head)                   gate             Δ_t
hook_step_decay    (batch, pos, head)                   decay            exp(Δ_t A_h)
hook_core_out (w)  (batch, pos, head, d_v)              output           y_t (the norm's input)
hook_state_norm    (batch, pos, head)                   state            ||h_t||_F
hook_state         (batch, pos, head, d_v, d_k)         state            h_t (``full_state=True``)
hook_out (w)       (batch, pos, d_model)                output           the mixer's output
=================  ===================================  ===============  ============================

In Hugging Face's Mamba-2 (transformers 5) the causal conv is a function on the conv weights,
not a module call, so x, B, C are recomputed from ``in_proj``'s output with the same conv; they
are fed only for calls that carry no conv or SSM state (no cache, or a fresh one): in decoding
steps those sites stay silent (a warning says so once). The writable sites work in every call.
Needs transformers >= 5 (tested 5.24): the torch path of 4.x computes another scan (it clamps Δ
at ``time_step_min`` and tiles B, C over the heads in another order), so the adapter refuses it.
"""

from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from probes.adapters.base import (FamilyAdapter, ImplicitAttention, SiteSpec, changed_entries,
                                  half_life, relative_residual, run_mixer)

SITES = (
    SiteSpec("hook_decay", ("head",), "decay", True, "exp(A_h) per unit step Δ"),
    SiteSpec("hook_gate", ("batch", "pos", "head", "d_v"), "gate", False, "silu(z_t)"),
    SiteSpec("hook_x", ("batch", "pos", "head", "d_v"), "attention_input", False, "x_t (values)"),
    SiteSpec("hook_B", ("batch", "pos", "head", "d_k"), "attention_input", False, "B_t (keys)"),
    SiteSpec("hook_C", ("batch", "pos", "head", "d_k"), "attention_input", False, "C_t (queries)"),
    SiteSpec("hook_dt", ("batch", "pos", "head"), "gate", False, "Δ_t"),
    SiteSpec("hook_step_decay", ("batch", "pos", "head"), "decay", False, "exp(Δ_t A_h)"),
    SiteSpec("hook_core_out", ("batch", "pos", "head", "d_v"), "output", True, "y_t, the scan's output"),
    SiteSpec("hook_state_norm", ("batch", "pos", "head"), "state", False, "||h_t||_F"),
    SiteSpec("hook_state", ("batch", "pos", "head", "d_v", "d_k"), "state", False, "h_t", full=True),
    SiteSpec("hook_out", ("batch", "pos", "d_model"), "output", True, "the mixer's output"),
)

# transformers 4.x's Mamba2Mixer.torch_forward differs from the SSD scan (see Mamba2Adapter.__init__)
MIN_TRANSFORMERS_MAJOR = 5

_INNER_SITES = ("hook_x", "hook_B", "hook_C", "hook_dt", "hook_step_decay", "hook_state_norm", "hook_state")


def ssd_states(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """h_t ``[batch, pos, head, d_v, d_k]`` from a zero state. ``x``: ``[batch, pos, head, d_v]``;
    ``dt``: ``[batch, pos, head]``; ``A``: ``[head]``; ``B``: ``[batch, pos, head, d_k]``."""
    dA = torch.exp(dt * A)                                        # [b, T, h]
    dBx = (dt[..., None] * x)[..., None] * B[..., None, :]        # [b, T, h, p, n]
    h = torch.zeros_like(dBx[:, 0])
    out = []
    for t in range(x.shape[1]):
        h = dA[:, t, :, None, None] * h + dBx[:, t]
        out.append(h)
    return torch.stack(out, 1) if out else dBx


def implicit_attention(dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                       D: torch.Tensor | None = None) -> torch.Tensor:
    """M ``[batch, head, t, s]`` (float64) with ``y_t = sum_s M[h, t, s] x_s``. ``dt``:
    ``[batch, pos, head]``; ``A``, ``D``: ``[head]``; ``B``, ``C``: ``[batch, pos, head, d_k]``."""
    dt, A, B, C = dt.double(), A.double(), B.double(), C.double()
    b, T, H = dt.shape
    logcum = torch.cumsum(dt * A, dim=1).transpose(1, 2)         # [b, h, T]
    seg = logcum[..., :, None] - logcum[..., None, :]              # [b, h, t, s]
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool, device=dt.device))
    L = torch.exp(seg.masked_fill(~causal, float("-inf")))
    CB = torch.einsum("bthn,bshn->bhts", C, B)
    M = CB * L * dt.transpose(1, 2)[:, :, None, :]
    if D is not None:
        M = M + torch.diag_embed(D.double()[None, :, None].expand(b, H, T))
    return M


class Mamba2Adapter(FamilyAdapter):
    """Hook sites and exact implicit attention for a ``Mamba2ForCausalLM`` (or ``Mamba2Model``)."""

    model_type = "mamba2"
    family = "Mamba-2"
    SITES = SITES
    implicit_layout = ("batch", "head", "pos", "src")

    def __init__(self, model: nn.Module, **options) -> None:
        import transformers

        major = int(transformers.__version__.split(".")[0])
        if major < MIN_TRANSFORMERS_MAJOR:
            raise RuntimeError(
                f"Mamba-2 adapter: transformers {transformers.__version__}'s torch path of Mamba2Mixer computes "
                "another scan than the paper and the kernels (it clamps Δ at time_step_min and, with n_groups > 1, "
                "tiles B and C over the heads in another order): the implicit attention would not be exact "
                f"(residual ~1e-2 on a tiny model). Use transformers >= {MIN_TRANSFORMERS_MAJOR} "
                "(pip install -U 'transformers>=5')")
        super().__init__(model, **options)

    def _mixers(self) -> Iterator[nn.Module]:
        backbone = getattr(self.model, "backbone", self.model)
        for block in backbone.layers:
            yield block.mixer

    @staticmethod
    def _fresh(mixer: nn.Module, cache) -> bool:
        """Whether this call starts from a zero conv and SSM state."""
        if cache is None:
            return True
        idx = getattr(mixer, "layer_idx", None)
        if hasattr(cache, "get_conv_state") and hasattr(cache, "get_recurrent_state"):
            try:
                return cache.get_conv_state(idx, state_idx=0) is None and \
                    cache.get_recurrent_state(idx, state_idx=0) is None
            except Exception:
                return False
        if hasattr(cache, "seqlen_offset"):  # transformers 4.x Mamba2Cache: zero states until the first step
            return cache.seqlen_offset == 0
        return False

    def _inner(self, mixer: nn.Module, proj: torch.Tensor, mask: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """x, B, C (per head), Δ and z from ``in_proj``'s output, as the module computes them."""
        Bn, T, _ = proj.shape
        H, P, G, N = mixer.num_heads, mixer.head_dim, mixer.n_groups, mixer.ssm_state_size
        I, conv_dim = mixer.intermediate_size, mixer.conv_dim
        dt_raw = proj[..., -H:]
        xBC = proj[..., -H - conv_dim:-H]
        z = proj[..., -H - conv_dim - I:-H - conv_dim]
        w = mixer.conv1d.weight
        xBC = F.conv1d(xBC.transpose(1, 2).to(w.dtype), w, mixer.conv1d.bias, padding=w.shape[-1] - 1,
                       groups=conv_dim)[..., :T]
        xBC = mixer.act(xBC).transpose(1, 2)
        if mask is not None:
            xBC = xBC * mask[:, :, None].to(xBC.dtype)
        x, B, C = torch.split(xBC, [I, G * N, G * N], dim=-1)
        rep = H // G
        B = B.reshape(Bn, T, G, N).repeat_interleave(rep, dim=2)
        C = C.reshape(Bn, T, G, N).repeat_interleave(rep, dim=2)
        dt = F.softplus(dt_raw.float() + mixer.dt_bias.float())
        lo, hi = getattr(mixer, "time_step_limit", (0.0, float("inf")))
        dt = torch.clamp(dt, min=lo, max=hi)
        return {"x": x.reshape(Bn, T, H, P).float(), "B": B.float(), "C": C.float(), "dt": dt, "z": z}

    def _forward(self, layer, original, bound, args, kwargs):
        mixer = self.mixers[layer]
        mask = bound.get("attention_mask")
        cache = bound.get("cache", bound.get("cache_params"))
        H, P = mixer.num_heads, mixer.head_dim
        want_inner = self.recording or any(self.is_active(layer, n) for n in _INNER_SITES)
        fresh = self._fresh(mixer, cache) if want_inner else True

        A_log = mixer.A_log
        decay = torch.exp(-torch.exp(A_log.float()))
        decay_used = self.emit(layer, "hook_decay", decay)
        subst = {}
        if decay_used is not decay:
            subst["A_log"] = changed_entries(decay_used, decay, torch.log(-torch.log(decay_used.double())), A_log)
        box: dict[str, torch.Tensor] = {}

        def on_in_proj(mod, inputs, out):
            box["proj"] = out
            I, cd = mixer.intermediate_size, mixer.conv_dim
            z = out[..., -H - cd - I:-H - cd]
            self.emit_lazy(layer, "hook_gate", lambda: F.silu(z.float()).reshape(*z.shape[:2], H, P))

        def on_norm(mod, inputs):
            y = inputs[0]
            box["y"] = y
            yh = y.reshape(*y.shape[:2], H, P)
            y2 = self.emit(layer, "hook_core_out", yh)
            return None if y2 is yh else (y2.reshape(y.shape).to(y.dtype),) + tuple(inputs[1:])

        out = run_mixer(original, args, kwargs, mixer, subst, forward_hooks=[(mixer.in_proj, on_in_proj)],
                        pre_hooks=[(mixer.norm, on_norm)])

        A_used = -torch.exp(subst.get("A_log", A_log).detach().float())
        if want_inner and "proj" in box:
            if not fresh:
                self.warn_once("carried", f"{self.family}: x, B, C, Δ and the state sites are fed only in calls "
                                          "that carry no conv or SSM state (not in decoding steps)")
            else:
                inner = self._inner(mixer, box["proj"].detach() if self.recording else box["proj"], mask)
                x, B, C, dt = inner["x"], inner["B"], inner["C"], inner["dt"]
                self.emit_lazy(layer, "hook_x", lambda: x)
                self.emit_lazy(layer, "hook_B", lambda: B)
                self.emit_lazy(layer, "hook_C", lambda: C)
                self.emit_lazy(layer, "hook_dt", lambda: dt)
                self.emit_lazy(layer, "hook_step_decay", lambda: torch.exp(dt * A_used))
                if self.is_active(layer, "hook_state_norm") or self.is_active(layer, "hook_state"):
                    hs = ssd_states(x, dt, A_used, B)
                    self.emit_lazy(layer, "hook_state_norm", lambda: hs.flatten(-2).norm(dim=-1))
                    self.emit_lazy(layer, "hook_state", lambda: hs)
                if self.recording:
                    self.record(layer, A=A_used, D=mixer.D.detach().float(), y=box["y"], **inner)
        return self.emit(layer, "hook_out", out)

    def _implicit(self, layer, rec, channels):
        if "x" not in rec:
            raise RuntimeError(f"layer {layer}: the call carried a state; implicit attention needs a fresh forward")
        A, D, x, dt, B, C, y = (rec[k] for k in ("A", "D", "x", "dt", "B", "C", "y"))
        H, P = x.shape[2], x.shape[3]
        y = y.reshape(*y.shape[:2], H, P)
        if channels is not None:
            A, D, x, dt, B, C, y = A[channels], D[channels], x[:, :, channels], dt[..., channels], \
                B[:, :, channels], C[:, :, channels], y[:, :, channels]
        M = implicit_attention(dt, A, B, C, D)
        rec_y = torch.einsum("bhts,bshp->bthp", M, x.double())
        res, err = relative_residual(rec_y, y.float())
        return ImplicitAttention(layer, M, self.implicit_layout, x.float(), None, rec_y, y.float(), res, err, channels,
                                 "per head; M includes D on the diagonal; compared: M @ x with the gated norm's "
                                 "input (the scan's output)")

    def decay_table(self) -> list[dict[str, torch.Tensor]]:
        """Per layer: ``A`` [head], ``decay`` = exp(A) per unit Δ, ``rest_dt`` = softplus(dt_bias)
        and ``half_life`` in tokens at that Δ."""
        out = []
        for m in self.mixers:
            A = -torch.exp(m.A_log.detach().double())
            rest = F.softplus(m.dt_bias.detach().double())
            out.append({"A": A, "decay": torch.exp(A), "rest_dt": rest, "half_life": half_life(torch.exp(A), rest)})
        return out


__all__ = ["Mamba2Adapter", "SITES", "implicit_attention", "ssd_states"]
