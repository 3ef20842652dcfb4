"""Adapter for ``transformers.RwkvForCausalLM`` (RWKV-4 time mixing).

The mixer core of each layer is the WKV operator, per channel c with decay rate
``w = exp(time_decay) > 0`` and bonus ``u = time_first`` (Peng et al. 2023, eq. 14-16)::

    a_t = e^{-w} a_{t-1} + e^{k_t} v_t,     b_t = e^{-w} b_{t-1} + e^{k_t}
    wkv_t = (a_{t-1} + e^{u + k_t} v_t) / (b_{t-1} + e^{u + k_t})

and the time mixing returns ``output(sigmoid(r_t) * wkv_t)``. From a zero state wkv is a
softmax attention per channel::

    wkv_t = sum_{s<=t} P[c, t, s] v_s,   P[c, t, :] = softmax_s(k_s - (t-1-s) w   (s < t),
                                                            u + k_t          (s = t))

:func:`implicit_attention` computes P ``[batch, channel, t, s]`` in float64; the adapter's
``implicit_attention`` compares ``sigmoid(r) * (P @ v)`` with the input the module's
``output`` projection actually receives.

Hook sites (``blocks.{i}.mixer.…``; ``w`` = writable):

====================  ======================  ===============  ======================================
site                  layout                  kind             value
====================  ======================  ===============  ======================================
hook_decay (w)        (channel,)              decay            e^{-w} = exp(-exp(time_decay)), per token
hook_time_first (w)   (channel,)              attention_input  u, the current token's bonus
hook_key (w)          (batch, pos, channel)   attention_input  k_t
hook_value (w)        (batch, pos, channel)   attention_input  v_t
hook_receptance       (batch, pos, channel)   gate             sigmoid(r_t)
hook_core_out (w)     (batch, pos, channel)   output           sigmoid(r_t) * wkv_t (output's input)
hook_state_num        (batch, pos, channel)   state            a_t (after token t)
hook_state_den        (batch, pos, channel)   state            b_t (after token t)
hook_out (w)          (batch, pos, d_model)   output           the time mixing's output
====================  ======================  ===============  ======================================

The state sites start from the state the call carries (``state=`` / the cache), else zero;
a_t, b_t are computed in float64 and returned in fp32 (they overflow fp32 only for keys near
88 summed over the decayed past). The channel-mixing (feed-forward) block is not hooked.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import nn

from probes.adapters.base import (FamilyAdapter, ImplicitAttention, SiteSpec, changed_entries, first_arg,
                                  half_life, relative_residual, run_mixer)

SITES = (
    SiteSpec("hook_decay", ("channel",), "decay", True, "exp(-exp(time_decay)), the decay per token"),
    SiteSpec("hook_time_first", ("channel",), "attention_input", True, "u = time_first, the current token's bonus"),
    SiteSpec("hook_key", ("batch", "pos", "channel"), "attention_input", True, "k_t"),
    SiteSpec("hook_value", ("batch", "pos", "channel"), "attention_input", True, "v_t"),
    SiteSpec("hook_receptance", ("batch", "pos", "channel"), "gate", False, "sigmoid(r_t)"),
    SiteSpec("hook_core_out", ("batch", "pos", "channel"), "output", True, "sigmoid(r_t) * wkv_t"),
    SiteSpec("hook_state_num", ("batch", "pos", "channel"), "state", False, "a_t"),
    SiteSpec("hook_state_den", ("batch", "pos", "channel"), "state", False, "b_t"),
    SiteSpec("hook_out", ("batch", "pos", "d_model"), "output", True, "the time mixing's output"),
)


def wkv_states(k: torch.Tensor, v: torch.Tensor, w: torch.Tensor,
               init: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(a_t, b_t) ``[batch, pos, channel]`` in float64 after each token, kept as
    ``(num, den) * exp(max)`` internally so that large keys do not overflow. ``w``: the decay
    rate exp(time_decay) ``[channel]``; ``init``: Hugging Face's (num, den, max) layer state."""
    k, v, w = k.double(), v.double(), w.double()
    Bn, T, C = k.shape
    if init is None:
        num = k.new_zeros(Bn, C)
        den = k.new_zeros(Bn, C)
        mx = torch.full((Bn, C), -1e38, dtype=torch.float64, device=k.device)
    else:
        num, den, mx = (s.double() for s in init)
    a_all, b_all = [], []
    for t in range(T):
        m = torch.maximum(mx - w, k[:, t])
        e1, e2 = torch.exp(mx - w - m), torch.exp(k[:, t] - m)
        num, den, mx = e1 * num + e2 * v[:, t], e1 * den + e2, m
        scale = torch.exp(mx)
        a_all.append(num * scale)
        b_all.append(den * scale)
    if not a_all:
        return k.new_zeros(Bn, 0, C), k.new_zeros(Bn, 0, C)
    return torch.stack(a_all, 1), torch.stack(b_all, 1)


def implicit_attention(k: torch.Tensor, w: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """P ``[batch, channel, t, s]`` (float64) with ``wkv_t[c] = sum_s P[c, t, s] v_s[c]`` from a
    zero state. ``k``: ``[batch, pos, channel]``; ``w`` = exp(time_decay) and ``u`` =
    time_first: ``[channel]``."""
    k, w, u = k.double(), w.double(), u.double()
    Bn, T, C = k.shape
    t = torch.arange(T, device=k.device)
    lag = (t[:, None] - 1 - t[None, :]).double()                      # t - 1 - s
    logits = k.transpose(1, 2)[:, :, None, :] - lag[None, None] * w[None, :, None, None]  # [B, C, t, s]
    diag = (u[None, :, None] + k.transpose(1, 2))                       # [B, C, t]
    logits = logits.clone()
    logits[:, :, t, t] = diag
    logits = logits.masked_fill((t[None, :] > t[:, None])[None, None], float("-inf"))
    return torch.softmax(logits, dim=-1)


class RwkvAdapter(FamilyAdapter):
    """Hook sites and exact implicit attention for a ``RwkvForCausalLM`` (or ``RwkvModel``)."""

    model_type = "rwkv"
    family = "RWKV"
    SITES = SITES
    implicit_layout = ("batch", "channel", "pos", "src")

    def _mixers(self) -> Iterator[nn.Module]:
        base = getattr(self.model, "rwkv", self.model)
        for block in base.blocks:
            yield block.attention

    def _forward(self, layer, original, bound, args, kwargs):
        mixer = self.mixers[layer]
        state = bound.get("state")
        L = mixer.layer_id
        want_state = self.is_active(layer, "hook_state_num") or self.is_active(layer, "hook_state_den")
        init = None
        if want_state and state is not None:  # read before the call: it updates the state in place
            init = tuple(state[i][:, :, L].detach().clone() for i in (2, 3, 4))

        td = mixer.time_decay
        decay = torch.exp(-torch.exp(td.float()))
        decay_used = self.emit(layer, "hook_decay", decay)
        subst = {}
        if decay_used is not decay:
            subst["time_decay"] = changed_entries(decay_used, decay, torch.log(-torch.log(decay_used.double())), td)
        u_used = self.emit(layer, "hook_time_first", mixer.time_first)
        if u_used is not mixer.time_first:
            subst["time_first"] = u_used.to(mixer.time_first.dtype)
        box: dict[str, torch.Tensor] = {}

        def replace(site, key):
            def fn(mod, inputs, out):
                box[key] = new = self.emit(layer, site, out)
                return None if new is out else new.to(out.dtype)
            return fn

        def on_receptance(mod, inputs, out):
            box["r"] = r = torch.sigmoid(out)  # what the module computes from this output
            self.emit_lazy(layer, "hook_receptance", lambda: r)

        def on_output(mod, inputs):
            y = inputs[0]
            box["y"] = y
            y2 = self.emit(layer, "hook_core_out", y)
            return None if y2 is y else (y2,) + tuple(inputs[1:])

        out = run_mixer(original, args, kwargs, mixer, subst,
                        forward_hooks=[(mixer.key, replace("hook_key", "k")), (mixer.value, replace("hook_value", "v")),
                                       (mixer.receptance, on_receptance)],
                        pre_hooks=[(mixer.output, on_output)])
        attention_out = out[0] if isinstance(out, tuple) else out

        w_used = torch.exp(subst.get("time_decay", td).detach().double())
        if want_state and {"k", "v"} <= box.keys():
            a, b = wkv_states(box["k"], box["v"], w_used, init)
            self.emit_lazy(layer, "hook_state_num", lambda: a.float())
            self.emit_lazy(layer, "hook_state_den", lambda: b.float())
        if self.recording:
            self.record(layer, w=w_used, u=u_used.detach().double(), **box)
        new = self.emit(layer, "hook_out", attention_out)
        if isinstance(out, tuple):
            return (new,) + tuple(out[1:])
        return new

    def _implicit(self, layer, rec, channels):
        k, v, r, y, w, u = (rec[n] for n in ("k", "v", "r", "y", "w", "u"))
        if channels is not None:
            k, v, r, y, w, u = k[..., channels], v[..., channels], r[..., channels], y[..., channels], \
                w[channels], u[channels]
        P = implicit_attention(k, w, u)
        gate = r.double()
        rec_y = torch.einsum("bcts,bsc->btc", P, v.double()) * gate
        res, err = relative_residual(rec_y, y.float())
        return ImplicitAttention(layer, P, self.implicit_layout, v.float(), gate, rec_y, y.float(), res, err, channels,
                                 "rows sum to 1 (a softmax per channel); compared: sigmoid(r) * (P @ v) with the "
                                 "output projection's input")

    def decay_table(self) -> list[dict[str, torch.Tensor]]:
        """Per layer: ``decay`` = e^{-w} per token [channel], ``half_life`` in tokens
        (ln 2 / w), ``time_first`` u."""
        out = []
        for m in self.mixers:
            d = torch.exp(-torch.exp(m.time_decay.detach().double()))
            out.append({"decay": d, "half_life": half_life(d), "time_first": m.time_first.detach().double(),
                        "rate": torch.exp(m.time_decay.detach().double())})
        return out


__all__ = ["RwkvAdapter", "SITES", "implicit_attention", "wkv_states"]
