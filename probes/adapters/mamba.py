"""Adapter for ``transformers.MambaForCausalLM`` (Mamba-1, selective state spaces).

The mixer core of each layer is the selective scan, per inner channel c and state index n::

    h_t[c, n] = exp(Δ_t[c] A[c, n]) h_{t-1}[c, n] + Δ_t[c] B_t[n] x_t[c]
    y_t[c]    = sum_n C_t[n] h_t[c, n] + D[c] x_t[c]

(Gu & Dao 2023, eq. 2a-2b with zero-order-hold A and Euler B as in the reference code), and
the mixer returns ``out_proj(y_t * silu(z_t))``. Unrolled from a zero state this is an exact
attention per channel::

    y_t[c] = sum_{s<=t} M[c, t, s] x_s[c],
    M[c, t, s] = sum_n C_t[n] exp(sum_{r=s+1..t} Δ_r[c] A[c, n]) Δ_s[c] B_s[n]  +  D[c] [s = t]

:func:`implicit_attention` computes M ``[batch, channel, t, s]`` in float64; the adapter's
``implicit_attention`` compares ``(M @ x) * silu(z)`` with the input the module's ``out_proj``
actually receives.

Hook sites (``blocks.{i}.mixer.…``; ``w`` = writable: a returned value flows on):

=================  ================================  ===============  ===================================
site               layout                            kind             value
=================  ================================  ===============  ===================================
hook_decay (w)     (channel, d_k)                    decay            exp(A): the decay per unit of Δ;
                                                                      a token decays by hook_decay**Δ_t
hook_gate          (batch, pos, channel)             gate             silu(z_t), the output gate
hook_x             (batch, pos, channel)             attention_input  x_t after conv + SiLU (the values)
hook_B (w)         (batch, pos, d_k)                 attention_input  B_t (the keys)
hook_C (w)         (batch, pos, d_k)                 attention_input  C_t (the queries)
hook_dt            (batch, pos, channel)             gate             Δ_t = softplus(dt_proj(.)), the
                                                                      selective step (input gate)
hook_core_out (w)  (batch, pos, channel)             output           y_t * silu(z_t) (out_proj's input)
hook_state_norm    (batch, pos, channel)             state            ||h_t[c, :]||_2
hook_state         (batch, pos, channel, d_k)        state            h_t (``full_state=True`` only)
hook_step_decay    (batch, pos, channel, d_k)        decay            exp(Δ_t A) (``full_state=True``)
hook_out (w)       (batch, pos, d_model)             output           the mixer's output
=================  ================================  ===============  ===================================

The state sites are computed from the captured Δ, B, x and the decay in use, from a zero
state, or, in a one-token decoding step, from the cache's state (Hugging Face's Mamba-1
starts every multi-token call from zero). Tested with transformers 5.x; the submodule calls
it relies on (``in_proj``, ``x_proj``, ``out_proj``) are the same in 4.4x.
"""

from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from probes.adapters.base import (FamilyAdapter, ImplicitAttention, SiteSpec, changed_entries, first_arg,
                                  half_life, relative_residual, run_mixer)

SITES = (
    SiteSpec("hook_decay", ("channel", "d_k"), "decay", True, "exp(A) per unit step Δ"),
    SiteSpec("hook_gate", ("batch", "pos", "channel"), "gate", False, "silu(z_t)"),
    SiteSpec("hook_x", ("batch", "pos", "channel"), "attention_input", False, "x_t after conv and SiLU (values)"),
    SiteSpec("hook_B", ("batch", "pos", "d_k"), "attention_input", True, "B_t (keys)"),
    SiteSpec("hook_C", ("batch", "pos", "d_k"), "attention_input", True, "C_t (queries)"),
    SiteSpec("hook_dt", ("batch", "pos", "channel"), "gate", False, "Δ_t, the selective step"),
    SiteSpec("hook_core_out", ("batch", "pos", "channel"), "output", True, "y_t * silu(z_t), out_proj's input"),
    SiteSpec("hook_state_norm", ("batch", "pos", "channel"), "state", False, "||h_t[c, :]||"),
    SiteSpec("hook_state", ("batch", "pos", "channel", "d_k"), "state", False, "h_t", full=True),
    SiteSpec("hook_step_decay", ("batch", "pos", "channel", "d_k"), "decay", False, "exp(Δ_t A)", full=True),
    SiteSpec("hook_out", ("batch", "pos", "d_model"), "output", True, "the mixer's output"),
)

_STATE_SITES = ("hook_state_norm", "hook_state", "hook_step_decay")


def selective_states(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                     h0: torch.Tensor | None = None) -> torch.Tensor:
    """h_t ``[batch, pos, channel, d_k]`` of the recurrence above (dtype of ``x``), from ``h0``
    ``[batch, channel, d_k]`` (default zeros). ``x``, ``dt``: ``[batch, pos, channel]``;
    ``A``: ``[channel, d_k]``; ``B``: ``[batch, pos, d_k]``."""
    dA = torch.exp(dt[..., None] * A)
    dBx = dt[..., None] * B[:, :, None, :] * x[..., None]
    h = torch.zeros_like(dBx[:, 0]) if h0 is None else h0.to(dBx.dtype)
    out = []
    for t in range(x.shape[1]):
        h = dA[:, t] * h + dBx[:, t]
        out.append(h)
    return torch.stack(out, dim=1) if out else dBx


def implicit_attention(x_dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                       D: torch.Tensor | None = None, chunk: int = 64) -> torch.Tensor:
    """M ``[batch, channel, t, s]`` (float64) with ``y_t[c] = sum_s M[c, t, s] x_s[c]``.

    ``x_dt``: Δ ``[batch, pos, channel]``; ``A``: ``[channel, d_k]`` (negative rates);
    ``B``, ``C``: ``[batch, pos, d_k]``; ``D``: ``[channel]`` or None. Channels are done
    ``chunk`` at a time (the intermediate is ``[batch, T, T, chunk, d_k]``)."""
    dt, A, B, C = x_dt.double(), A.double(), B.double(), C.double()
    b, T, ch = dt.shape
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool, device=dt.device))
    out = []
    for c0 in range(0, ch, chunk):
        d = dt[..., c0:c0 + chunk]                                   # [b, T, c]
        logcum = torch.cumsum(d[..., None] * A[c0:c0 + chunk], dim=1)  # [b, T, c, n]
        seg = logcum[:, :, None] - logcum[:, None, :]                # [b, t, s, c, n]
        seg = seg.masked_fill(~causal[None, :, :, None, None], float("-inf"))
        w = torch.exp(seg) * (d[:, None, :, :, None] * B[:, None, :, None, :])
        out.append(torch.einsum("btscn,btn->bcts", w, C))
    M = torch.cat(out, dim=1) if out else dt.new_zeros(b, 0, T, T)
    if D is not None:
        M = M + torch.diag_embed(D.double()[None, :, None].expand(b, ch, T))
    return M


class MambaAdapter(FamilyAdapter):
    """Hook sites and exact implicit attention for a ``MambaForCausalLM`` (or ``MambaModel``)."""

    model_type = "mamba"
    family = "Mamba"
    SITES = SITES
    implicit_layout = ("batch", "channel", "pos", "src")

    def _mixers(self) -> Iterator[nn.Module]:
        backbone = getattr(self.model, "backbone", self.model)
        for block in backbone.layers:
            yield block.mixer

    # -- the forward ----------------------------------------------------------------------------
    def _initial_state(self, mixer: nn.Module, cache, T: int) -> tuple[torch.Tensor | None, bool]:
        """(h0 or None = zeros, known). Read before the call: the decode step updates it in place."""
        if cache is None:
            return None, True
        idx = getattr(mixer, "layer_idx", None)
        if hasattr(cache, "get_recurrent_state"):  # transformers 5: only a one-token step carries it
            if T != 1:
                return None, True
            try:
                st = cache.get_recurrent_state(idx, state_idx=0)
            except Exception:
                return None, False
            return (None if st is None else st.detach().clone().float()), True
        if hasattr(cache, "ssm_states"):  # transformers 4.x MambaCache
            return cache.ssm_states[idx].detach().clone().float(), True
        return None, False

    def _forward(self, layer, original, bound, args, kwargs):
        mixer = self.mixers[layer]
        hidden = first_arg(bound, args, "hidden_states", "input_states")
        cache = bound.get("cache", bound.get("cache_params"))
        Ch, N, R = mixer.intermediate_size, mixer.ssm_state_size, mixer.time_step_rank
        want_state = any(self.is_active(layer, n) for n in _STATE_SITES)
        h0, known = self._initial_state(mixer, cache, hidden.shape[1]) if want_state else (None, True)

        A_log = mixer.A_log
        decay = torch.exp(-torch.exp(A_log.float()))
        decay_used = self.emit(layer, "hook_decay", decay)
        subst = {}
        if decay_used is not decay:
            new_log = torch.log(-torch.log(decay_used.double()))
            subst["A_log"] = changed_entries(decay_used, decay, new_log, A_log)
        need_dt = want_state or self.recording or self.is_active(layer, "hook_dt")
        box: dict[str, torch.Tensor] = {}

        def on_in_proj(mod, inputs, out):
            z = out[..., Ch:]
            box["z"] = z
            self.emit_lazy(layer, "hook_gate", lambda: F.silu(z.float()))

        def on_x_proj(mod, inputs, out):
            x = inputs[0]
            ts, Bm, Cm = torch.split(out, [R, N, N], dim=-1)
            self.emit_lazy(layer, "hook_x", lambda: x)
            B2 = self.emit(layer, "hook_B", Bm)
            C2 = self.emit(layer, "hook_C", Cm)
            box.update(x=x, B=B2, C=C2)
            if need_dt:
                dt = F.softplus(F.linear(ts.float(), mixer.dt_proj.weight.float(), mixer.dt_proj.bias.float()))
                box["dt"] = dt
                self.emit_lazy(layer, "hook_dt", lambda: dt)
            if B2 is not Bm or C2 is not Cm:
                return torch.cat([ts, B2.to(out.dtype), C2.to(out.dtype)], dim=-1)
            return None

        def on_out_proj(mod, inputs):
            y = inputs[0]
            box["y"] = y
            y2 = self.emit(layer, "hook_core_out", y)
            return None if y2 is y else (y2,) + tuple(inputs[1:])

        out = run_mixer(original, args, kwargs, mixer, subst,
                        forward_hooks=[(mixer.in_proj, on_in_proj), (mixer.x_proj, on_x_proj)],
                        pre_hooks=[(mixer.out_proj, on_out_proj)])

        A_used = -torch.exp(subst.get("A_log", A_log).detach().float())
        if want_state and {"x", "dt", "B"} <= box.keys():
            if not known:
                self.warn_once("state", f"{self.family}: the cache's state could not be read; the state sites "
                                        "are not fed in calls that carry a state")
            else:
                x, dt, Bm = box["x"].float(), box["dt"], box["B"].float()
                self.emit_lazy(layer, "hook_step_decay", lambda: torch.exp(dt[..., None] * A_used))
                hs = selective_states(x, dt, A_used, Bm, h0)
                self.emit_lazy(layer, "hook_state_norm", lambda: hs.norm(dim=-1))
                self.emit_lazy(layer, "hook_state", lambda: hs)
        if self.recording:
            self.record(layer, A=A_used, D=mixer.D.detach().float(), **box)
        return self.emit(layer, "hook_out", out)

    # -- analyses -------------------------------------------------------------------------------
    def _implicit(self, layer, rec, channels):
        A, D, x, dt, B, C, z, y = (rec[k] for k in ("A", "D", "x", "dt", "B", "C", "z", "y"))
        if channels is not None:
            A, D, x, dt, z, y = A[channels], D[channels], x[..., channels], dt[..., channels], z[..., channels], \
                y[..., channels]
        M = implicit_attention(dt, A, B, C, D)
        gate = F.silu(z.double())
        rec_y = torch.einsum("bcts,bsc->btc", M, x.double()) * gate
        res, err = relative_residual(rec_y, y.float())
        return ImplicitAttention(layer, M, self.implicit_layout, x.float(), gate, rec_y, y.float(), res, err,
                                 channels, "M includes D on the diagonal; compared: (M @ x) * silu(z) with "
                                           "out_proj's input")

    def decay_table(self) -> list[dict[str, torch.Tensor]]:
        """Per layer: ``A`` [channel, d_k], ``decay`` = exp(A) per unit Δ, ``rest_dt`` =
        softplus(dt_proj.bias) [channel] (Δ when the input-dependent part is zero) and
        ``half_life`` [channel, d_k] in tokens at that Δ."""
        out = []
        for m in self.mixers:
            A = -torch.exp(m.A_log.detach().double())
            rest = F.softplus(m.dt_proj.bias.detach().double())
            out.append({"A": A, "decay": torch.exp(A), "rest_dt": rest,
                        "half_life": half_life(torch.exp(A), rest[:, None])})
        return out


__all__ = ["MambaAdapter", "SITES", "implicit_attention", "selective_states"]
