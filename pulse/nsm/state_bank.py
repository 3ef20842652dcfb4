"""StateBank: the bank of state slots that lives inside each block of the PULSE language model.

Stateful-sublayer signature (docs/CONVENTIONS.md)::

    delta, new_state = bank(x [B, T, D], mask [B, T] (1.0 real, 0.0 pad), state | None)
    state = bank.init_state(batch_size, device, dtype)

Semantics (causal, parallel over the sequence). Let ``C = chunk_size``.

* Every real token has a per-row running index ``n = count + cumsum(mask)`` (1-based; ``count``
  = real tokens seen in earlier calls) and a chunk id ``g = (n - 1) // C``. Padding never
  advances ``n`` and never touches the state, so left padding changes nothing.
* The bank has versions: version 0 is the initial bank, version ``g + 1`` is the bank after
  chunk ``g`` (the tokens with ids ``g*C+1 .. (g+1)*C``) completed. A token of chunk ``g``
  reads and routes against version ``g``: it never sees itself or any later token.
* **Write.** Routing weights ``w[t, s] = softmax over alive s of (W_q x_t) . (W_k b_s) / sqrt(dk)``
  (``b`` = the version the token reads; pad tokens weigh 0). When chunk ``g`` completes, slot
  ``s`` receives ``u_s = sum_t w[t,s] W_v x_t / (sum_t w[t,s] + eps)`` over the chunk's tokens.
  The sums of an unfinished chunk are carried in the state (``pending_u``, ``pending_w``),
  so any split of a text into calls (down to one token per call) gives the same outputs.
* **Update.** ``bank <- GatedCell(u, bank)`` (GRU or LSTM equations of :mod:`pulse.nsm.cells`),
  then multi-head communication among alive slots (residual + LayerNorm). With
  ``write_mode='mass'`` the cell's step is scaled by the routed mass
  ``m_s = min(sum_t w[t,s], 1)``: the GRU update gate becomes ``m_s * z`` (that product is what
  ``hook_update_gate`` shows), the LSTM moves ``h, c`` by ``m_s`` of the way to their new values.
  Averaging the routed tokens (``'mean'``) gives a slot that received almost no weight a
  full-strength write of whatever little reached it; the mass gate keeps such slots intact. Dead slots stay
  unchanged; their values never enter any computation (they are replaced by 0 before use).
* **Read.** ``r[t, s] = softmax over alive s of (W_rq x_t) . (W_rk b_s) / sqrt(dk)``,
  ``read_t = sum_s r[t,s] * importance_s * b_s``, ``delta_t = W_o read_t`` (0 at pads).
* Importance ``= sigmoid(importance_logits)`` ``[S]``; ``alive`` is a persistent bool buffer
  ``[S]`` (in the ``state_dict``). :meth:`importance_loss` is the mean importance over alive
  slots (the language model adds ``importance_reg * sum over blocks``).

State dict: ``bank`` ``[B, S, Ds]``, ``count`` ``[B]`` long, ``pending_u`` ``[B, S, Ds]`` (the
unnormalised sum ``sum_t w v`` of the unfinished chunk), ``pending_w`` ``[B, S]``, and
``cell`` ``[B, S, Ds]`` for the LSTM. ``S = max_states``.

Hook points (on the StateBank itself, e.g. ``blocks.0.states.hook_routing``). ``U`` = number
of chunk updates completed in this call, the maximum over rows; a row with fewer updates is
padded: gates and slot attention with zeros, ``hook_slots`` with the repeated bank (its value
stands), ``hook_update_positions`` with -1. Gates and attention are also 0 on dead slots.

=======================  =====================  ==============================================
name                     shape                  value
=======================  =====================  ==============================================
hook_importance          [S]                    sigmoid(importance_logits)
hook_alive               [S]                    alive as float; > 0.5 counts as alive
hook_routing             [B, T, S]              write (routing) weights
hook_reset_gate          [B, U, S, Ds]          GRU reset gate of each update
hook_update_gate         [B, U, S, Ds]          GRU update gate of each update
hook_input_gate          [B, U, S, Ds]          LSTM input gate
hook_forget_gate         [B, U, S, Ds]          LSTM forget gate
hook_output_gate         [B, U, S, Ds]          LSTM output gate
hook_slot_attention      [B, U, heads, S, S]    communication weights (if enabled)
hook_slots               [B, U, S, Ds]          bank after each update
hook_update_positions    [B, U] long            call-relative position of the token that
                                                completed each update (-1: none)
hook_read_weights        [B, T, S]              read weights r
hook_read                [B, T, Ds]             read vector before W_o
=======================  =====================  ==============================================

Interventions: every hook's returned value flows on. The per-update hooks (routing, gates,
slot attention, slots) are called once per forward with the whole ``[B, U, ...]`` tensor;
when a hook returns a different tensor, the chunk updates are recomputed with the returned
values substituted (hooks in the order routing, gates, slot attention, slots), so e.g.
clamping ``hook_update_gate`` to 0 freezes the bank for that call.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from pulse.hooks import HookPoint
from pulse.nsm.cells import GatedCell, SlotCommunication, check_gate_type, check_positive_int
from pulse.nsm.manager import SlotBookkeeping, _check_threshold


def _capturing() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()

WRITE_MODES = ("mean", "mass")

_GATE_HOOKS = {
    "gru": {"reset": "hook_reset_gate", "update": "hook_update_gate"},
    "lstm": {"input": "hook_input_gate", "forget": "hook_forget_gate", "output": "hook_output_gate"},
}


class StateBank(SlotBookkeeping, nn.Module):
    """Causal chunk-updated bank of state slots (see the module docstring for the semantics).

    Args:
        hidden_size: token width ``D`` of the residual stream.
        num_states: slots alive at construction.
        state_dim: slot width ``Ds``.
        chunk_size: real tokens per bank update ``C``.
        gate_type: ``'gru'`` or ``'lstm'``.
        num_heads: heads of the slot-to-slot communication (must divide ``state_dim``).
        enable_communication: attention among slots after each gated update.
        prune_threshold: default threshold of :meth:`prune_low_importance_states`.
        max_states: slot capacity ``S`` (default ``num_states``); slots beyond ``num_states``
            start dead and can be revived with :meth:`allocate_states`.
        importance_init: importance of fresh slots, in (0, 1).
        eps: added to the routing-weight total of each slot.
        write_mode: ``'mean'`` (the slot is updated with the routed mean ``u`` at full
            strength) or ``'mass'`` (the update is scaled by the routed mass
            ``m = min(sum_t w[t, s], 1)``, so a slot few tokens route to barely changes).

    ``forward(x [B,T,D], mask [B,T] | None, state | None) -> (delta [B,T,D], new_state)``.
    """

    def __init__(
        self,
        hidden_size: int,
        num_states: int,
        state_dim: int,
        chunk_size: int,
        gate_type: str = "gru",
        num_heads: int = 4,
        enable_communication: bool = True,
        prune_threshold: float = 0.3,
        max_states: Optional[int] = None,
        importance_init: float = 0.9,
        eps: float = 1e-6,
        write_mode: str = "mean",
    ) -> None:
        super().__init__()
        self.hidden_size = check_positive_int("hidden_size", hidden_size)
        self.num_states = check_positive_int("num_states", num_states)
        self.state_dim = check_positive_int("state_dim", state_dim)
        self.chunk_size = check_positive_int("chunk_size", chunk_size)
        self.gate_type = check_gate_type(gate_type)
        self.num_heads = check_positive_int("num_heads", num_heads)
        if max_states is None:
            max_states = num_states
        self.max_states = check_positive_int("max_states", max_states)
        if num_states > max_states:
            raise ValueError(f"num_states ({num_states}) must be <= max_states ({max_states})")
        self.prune_threshold = _check_threshold("prune_threshold", prune_threshold)
        if not 0.0 < float(importance_init) < 1.0:
            raise ValueError(f"importance_init must be in (0, 1), got {importance_init!r}")
        self.importance_init = float(importance_init)
        self.enable_communication = bool(enable_communication)
        self.eps = float(eps)
        if write_mode not in WRITE_MODES:
            raise ValueError(f"write_mode must be one of {WRITE_MODES}, got {write_mode!r}")
        self.write_mode = write_mode
        self.key_dim = state_dim
        self._init_bookkeeping(max_states, state_dim, num_states)

        d, ds, dk = hidden_size, state_dim, self.key_dim
        self.write_query = nn.Linear(d, dk, bias=False)  # W_q
        self.write_key = nn.Linear(ds, dk, bias=False)  # W_k
        self.write_value = nn.Linear(d, ds)  # W_v
        self.read_query = nn.Linear(d, dk, bias=False)  # W_rq
        self.read_key = nn.Linear(ds, dk, bias=False)  # W_rk
        self.out_proj = nn.Linear(ds, d, bias=False)  # W_o
        self.cell = GatedCell(ds, self.gate_type)
        self.communication = SlotCommunication(ds, num_heads) if self.enable_communication else None

        self.hook_importance = HookPoint(layout=("slot",), kind="importance")
        self.hook_alive = HookPoint(layout=("slot",), kind="alive")
        self.hook_routing = HookPoint(layout=("batch", "pos", "slot"), kind="routing")
        for name in _GATE_HOOKS[self.gate_type].values():
            setattr(self, name, HookPoint(layout=("batch", "update", "slot", "d_state"), kind="gate"))
        self.hook_slot_attention = HookPoint(layout=("batch", "update", "state_head", "slot", "key_slot"),
                                              kind="attention")
        self.hook_slots = HookPoint(layout=("batch", "update", "slot", "d_state"), kind="state")
        self.hook_update_positions = HookPoint(layout=("batch", "update"), kind="positions")
        self.hook_read_weights = HookPoint(layout=("batch", "pos", "slot"), kind="memory_read")
        self.hook_read = HookPoint(layout=("batch", "pos", "d_state"), kind="memory_read")

    # ------------------------------------------------------------------ state
    def init_state(self, batch_size: int, device=None, dtype: Optional[torch.dtype] = None) -> dict:
        """Fresh state: the learned initial bank expanded over the batch, zero counters/sums."""
        check_positive_int("batch_size", batch_size)
        dtype = dtype or self.slot_values.dtype
        s, ds = self.max_states, self.state_dim
        bank = self.slot_values.to(device=device, dtype=dtype)[None].expand(batch_size, s, ds)
        state = {
            "bank": bank,
            "count": torch.zeros(batch_size, dtype=torch.long, device=device),
            "pending_u": torch.zeros(batch_size, s, ds, dtype=dtype, device=device),
            "pending_w": torch.zeros(batch_size, s, dtype=dtype, device=device),
        }
        if self.gate_type == "lstm":
            state["cell"] = torch.zeros(batch_size, s, ds, dtype=dtype, device=device)
        return state

    def _check_state(self, state: dict, b: int) -> None:
        s, ds = self.max_states, self.state_dim
        shapes = {"bank": (b, s, ds), "count": (b,), "pending_u": (b, s, ds), "pending_w": (b, s)}
        if self.gate_type == "lstm":
            shapes["cell"] = (b, s, ds)
        if not isinstance(state, dict):
            raise TypeError(f"state must be a dict or None, got {type(state).__name__}")
        for key, shape in shapes.items():
            if key not in state:
                raise ValueError(f"state is missing key {key!r}")
            if tuple(state[key].shape) != shape:
                raise ValueError(f"state[{key!r}] must have shape {shape}, got {tuple(state[key].shape)}")
        if state["count"].dtype != torch.long:
            raise ValueError("state['count'] must be a long tensor")

    # ---------------------------------------------------------------- forward
    def forward(
        self, x: torch.Tensor, mask: Optional[torch.Tensor] = None, state: Optional[dict] = None
    ) -> tuple[torch.Tensor, dict]:
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[-1] != self.hidden_size:
            raise ValueError(f"x must be [B, T, {self.hidden_size}], got {getattr(x, 'shape', x)}")
        b, t, _ = x.shape
        dev, dtype = x.device, x.dtype
        if mask is None:
            mask = torch.ones(b, t, device=dev, dtype=dtype)
        if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != (b, t):
            raise ValueError(f"mask must be [B, T] = {(b, t)}, got {getattr(mask, 'shape', mask)}")
        fresh = state is None
        if fresh:
            state = self.init_state(b, dev, dtype)
        self._check_state(state, b)
        c_size, s = self.chunk_size, self.max_states
        zero = torch.zeros((), dtype=dtype, device=dev)

        imp = self.hook_importance(torch.sigmoid(self.importance_logits).to(dtype))  # [S]
        alive = self.hook_alive(self.alive.to(dtype)) > 0.5  # [S] bool
        if not _capturing() and not bool(alive.any()):
            raise ValueError("alive: the state bank has no alive slot")
        # Fast path (training, prompts): a fresh state and no hook registered on this bank. The
        # chunk counts then have static upper bounds, so nothing waits on the GPU (CUDA-graph
        # capturable), and the scan keeps only what the forward needs. Chunks past a row's end
        # carry no tokens and are never applied, so the result is the same as the exact path.
        fast = fresh and not self._hooks_active()

        # ---- per-token bookkeeping: relative chunk ids and in-chunk slots
        m = mask > 0  # [B, T]
        count = state["count"].to(dev)
        cums = torch.cumsum(m.long(), dim=1)  # [B, T]
        n = count[:, None] + cums  # 1-based running index (meaningful at real tokens)
        k0 = torch.div(count, c_size, rounding_mode="floor")  # updates done before this call
        rel = torch.div(n - 1, c_size, rounding_mode="floor") - k0[:, None]  # [B, T]
        pos_in_chunk = (n - 1) % c_size
        total = count + cums[:, -1] if t > 0 else count
        n_upd = torch.div(total, c_size, rounding_mode="floor") - k0  # [B] updates in this call
        if fast:
            u_max, j_max = t // c_size, max((t + c_size - 1) // c_size, 1)
        else:
            u_max = int(n_upd.max().item()) if b > 0 else 0
            rel_real = torch.where(m, rel, torch.full_like(rel, -1))
            j_max = max(int(rel_real.max().item()) + 1 if rel_real.numel() else 1, 1)
        flat = torch.where(m, rel * c_size + pos_in_chunk, torch.full_like(rel, j_max * c_size))
        gidx = torch.where(m, flat, torch.zeros_like(flat))

        def to_buf(v: torch.Tensor) -> torch.Tensor:  # [B, T, F] -> [B, J, C, F]
            f = v.shape[-1]
            v = torch.where(m[..., None], v, torch.zeros((), dtype=v.dtype, device=dev))
            buf = v.new_zeros(b, j_max * c_size + 1, f).scatter(1, flat[..., None].expand(-1, -1, f), v)
            return buf[:, : j_max * c_size].reshape(b, j_max, c_size, f)

        def to_tok(v: torch.Tensor) -> torch.Tensor:  # [B, J, C, F] -> [B, T, F], zero at pads
            f = v.shape[-1]
            out = v.reshape(b, j_max * c_size, f).gather(1, gidx[..., None].expand(-1, -1, f))
            return torch.where(m[..., None], out, torch.zeros((), dtype=v.dtype, device=dev))

        present = to_buf(m[..., None].to(dtype))[..., 0] > 0.5  # [B, J, C]
        scale = 1.0 / math.sqrt(self.key_dim)
        # project per token first (O(T)), then lay the projections out by (chunk, position)
        q_w = to_buf(self.write_query(x))  # [B, J, C, dk]
        v_w = to_buf(self.write_value(x))  # [B, J, C, Ds]
        q_r = to_buf(self.read_query(x))  # [B, J, C, dk]
        alive_s = alive[None, :, None]

        gate_hooks = _GATE_HOOKS[self.gate_type]

        def scan(ov: dict) -> dict:
            bank, cell = state["bank"].to(dtype), state.get("cell")
            p_u = torch.zeros_like(state["pending_u"], dtype=dtype)
            p_w = torch.zeros_like(state["pending_w"], dtype=dtype)
            versions, ws = [], []
            rec: dict[str, list] = {name: [] for name in gate_hooks.values()}
            rec["hook_slot_attention"], rec["hook_slots"] = [], []
            ov_routing = to_buf(ov["hook_routing"]) if "hook_routing" in ov else None
            for j in range(j_max):
                versions.append(bank)
                bank_c = torch.where(alive_s, bank, zero)
                if ov_routing is not None:
                    w = ov_routing[:, j]
                else:
                    keys = self.write_key(bank_c)  # [B, S, dk]
                    sc = torch.einsum("bcd,bsd->bcs", q_w[:, j], keys) * scale
                    w = torch.softmax(sc.masked_fill(~alive[None, None, :], float("-inf")), dim=-1)
                w = w * present[:, j, :, None].to(dtype)  # [B, C, S]
                ws.append(w)
                su = torch.einsum("bcs,bcd->bsd", w, v_w[:, j])  # [B, S, Ds]
                sw = w.sum(dim=1)  # [B, S]
                if j == 0:
                    su = su + state["pending_u"].to(dtype)
                    sw = sw + state["pending_w"].to(dtype)
                last = n_upd == j  # this row's unfinished chunk
                p_u = torch.where(last[:, None, None], su, p_u)
                p_w = torch.where(last[:, None], sw, p_w)
                if j >= u_max:
                    continue
                done = n_upd > j  # [B] rows completing chunk j in this call
                u = su / (sw[..., None] + self.eps)
                hooks = {g: (lambda _v, _o=ov[h], _j=j: _o[:, _j]) for g, h in gate_hooks.items() if h in ov}
                mass = sw.clamp(max=1.0)[..., None] if self.write_mode == "mass" else None
                h_new, c_new, gates = self.cell(u, bank_c, None if cell is None else cell, hooks, mass)
                attn = None
                if self.communication is not None:
                    ah = (lambda _v, _o=ov["hook_slot_attention"], _j=j: _o[:, _j]) if "hook_slot_attention" in ov else None
                    h_new, attn = self.communication(h_new, alive, ah)
                h_new = torch.where(alive_s, h_new, bank)
                if "hook_slots" in ov:
                    h_new = ov["hook_slots"][:, j]
                keep = (done[:, None] & alive[None, :])[..., None]  # [B, S, 1]
                for g, h in gate_hooks.items():
                    rec[h].append(torch.where(keep, gates[g], zero))
                if attn is not None:
                    rec["hook_slot_attention"].append(torch.where(done[:, None, None, None], attn, zero))
                bank = torch.where(done[:, None, None], h_new, bank)
                if c_new is not None:
                    c_new = torch.where(alive_s, c_new, cell)
                    cell = torch.where(done[:, None, None], c_new, cell)
                rec["hook_slots"].append(bank)
            out = {"versions": versions, "bank": bank, "cell": cell, "p_u": p_u, "p_w": p_w}
            out["hook_routing"] = to_tok(torch.stack(ws, dim=1))  # [B, T, S]
            ds = self.state_dim
            for name, vals in rec.items():
                if name == "hook_slot_attention":
                    shape = (b, 0, self.num_heads, s, s)
                else:
                    shape = (b, 0, s, ds)
                out[name] = torch.stack(vals, dim=1) if vals else torch.zeros(shape, dtype=dtype, device=dev)
            return out

        if fast:
            return self._fast_forward(state, q_w, v_w, q_r, present, n_upd, alive, imp, m, to_tok, total,
                                      u_max, j_max)

        order = ["hook_routing", *gate_hooks.values()]
        if self.communication is not None:
            order.append("hook_slot_attention")
        order.append("hook_slots")
        overrides: dict[str, torch.Tensor] = {}
        res = scan(overrides)
        for name in order:
            val = res[name]
            new = getattr(self, name)(val)
            if new is not val:
                if tuple(new.shape) != tuple(val.shape):
                    raise ValueError(f"{name}: a hook returned shape {tuple(new.shape)}, expected {tuple(val.shape)}")
                overrides[name] = new.to(dtype)
                res = scan(overrides)

        # ---- call-relative positions of the tokens that completed each update
        ar = torch.arange(t, device=dev)[None, :, None].expand(b, t, 1)
        pos_buf = to_buf(ar)[..., 0]  # [B, J, C]
        if u_max > 0:
            upd_pos = pos_buf[:, :u_max, c_size - 1]
            upd_pos = torch.where(n_upd[:, None] > torch.arange(u_max, device=dev)[None], upd_pos, -1)
        else:
            upd_pos = torch.zeros(b, 0, dtype=torch.long, device=dev)
        self.hook_update_positions(upd_pos)

        # ---- read: every token reads the bank version of its chunk
        vs = torch.stack(res["versions"], dim=1)  # [B, J, S, Ds]
        vs_c = torch.where(alive[None, None, :, None], vs, zero)
        k_r = self.read_key(vs_c)  # [B, J, S, dk]
        sc = torch.einsum("bjcd,bjsd->bjcs", q_r, k_r) * scale
        r_buf = torch.softmax(sc.masked_fill(~alive[None, None, None, :], float("-inf")), dim=-1)
        r_buf = r_buf * present[..., None].to(dtype)  # [B, J, C, S]
        r_tok = to_tok(r_buf.reshape(b, j_max, c_size, s))  # [B, T, S]
        r_new = self.hook_read_weights(r_tok)
        if r_new is not r_tok:
            r_buf = to_buf(r_new.to(dtype))
        read_buf = torch.einsum("bjcs,bjsd->bjcd", r_buf * imp, vs_c)  # [B, J, C, Ds]
        read = self.hook_read(to_tok(read_buf))  # [B, T, Ds]
        delta = torch.where(m[..., None], self.out_proj(read), zero)  # [B, T, D]

        new_state = {
            "bank": res["bank"],
            "count": total,
            "pending_u": res["p_u"],
            "pending_w": res["p_w"],
        }
        if self.gate_type == "lstm":
            new_state["cell"] = res["cell"]
        return delta, new_state

    # ------------------------------------------------------------- fast path
    def _hooks_active(self) -> bool:
        from torch.nn.modules import module as _m

        if _m._global_forward_hooks or _m._global_forward_pre_hooks:
            return True
        return any(h._forward_hooks or h._forward_pre_hooks for h in self.children() if isinstance(h, HookPoint))

    def _fast_forward(self, state, q_w, v_w, q_r, present, n_upd, alive, imp, m, to_tok, total, u_max, j_max):
        """The forward of a fresh state with no hooks: the exact path's arithmetic, fewer ops."""
        b, _, c_size, _ = q_w.shape
        s, ds = self.max_states, self.state_dim
        dtype, dev = q_w.dtype, q_w.device
        scale = 1.0 / math.sqrt(self.key_dim)
        alive_s = alive[None, :, None]  # [1, S, 1]
        dead_cols = ~alive[None, None, :]  # [1, 1, S]
        pres = present.to(dtype)[..., None]  # [B, J, C, 1]
        bank, cell = state["bank"].to(dtype), state.get("cell")
        zero = torch.zeros((), dtype=dtype, device=dev)
        versions, sums, masses = [], [], []
        for j in range(j_max):
            versions.append(bank)
            bank_c = torch.where(alive_s, bank, zero)
            sc = torch.bmm(q_w[:, j], self.write_key(bank_c).transpose(1, 2)) * scale  # [B, C, S]
            w = torch.softmax(sc.masked_fill(dead_cols, float("-inf")), dim=-1) * pres[:, j]
            su = torch.bmm(w.transpose(1, 2), v_w[:, j])  # [B, S, Ds]
            sw = w.sum(dim=1)  # [B, S]
            sums.append(su)
            masses.append(sw)
            if j >= u_max:
                continue
            mass = sw.clamp(max=1.0)[..., None] if self.write_mode == "mass" else None
            h_new, c_new, _ = self.cell(su / (sw[..., None] + self.eps), bank_c, cell, None, mass)
            if self.communication is not None:
                h_new, _ = self.communication(h_new, alive)
            done = (n_upd > j)[:, None, None] & alive_s  # [B, S, 1]
            bank = torch.where(done, h_new, bank)
            if c_new is not None:
                cell = torch.where(done, c_new, cell)
        # the unfinished chunk of each row: index n_upd (a zero chunk when the row ended on a boundary)
        su_all = torch.stack(sums + [torch.zeros_like(sums[0])], dim=1)  # [B, J+1, S, Ds]
        sw_all = torch.stack(masses + [torch.zeros_like(masses[0])], dim=1)  # [B, J+1, S]
        last = n_upd.clamp(max=j_max)
        p_u = su_all.gather(1, last[:, None, None, None].expand(b, 1, s, ds))[:, 0]
        p_w = sw_all.gather(1, last[:, None, None].expand(b, 1, s))[:, 0]

        vs_c = torch.where(alive[None, None, :, None], torch.stack(versions, dim=1), zero)  # [B, J, S, Ds]
        sc = torch.einsum("bjcd,bjsd->bjcs", q_r, self.read_key(vs_c)) * scale
        r_buf = torch.softmax(sc.masked_fill(~alive[None, None, None, :], float("-inf")), dim=-1) * pres
        read_buf = torch.einsum("bjcs,bjsd->bjcd", r_buf * imp, vs_c)  # [B, J, C, Ds]
        delta = torch.where(m[..., None], self.out_proj(to_tok(read_buf)), zero)
        new_state = {"bank": bank, "count": total, "pending_u": p_u, "pending_w": p_w}
        if self.gate_type == "lstm":
            new_state["cell"] = cell
        return delta, new_state

    def extra_repr(self) -> str:
        return (
            f"hidden_size={self.hidden_size}, num_states={self.num_states}, max_states={self.max_states}, "
            f"state_dim={self.state_dim}, chunk_size={self.chunk_size}, gate_type={self.gate_type!r}"
        )
