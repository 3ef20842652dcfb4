"""A whole training step (forward, backward, gradient clipping, AdamW) as one CUDA graph.

A small recurrent model is launch-bound: the state bank's per-chunk update is a few dozen
kernels per chunk and layer, so a step is thousands of tiny launches whose Python and driver
overhead dwarfs the arithmetic. Capturing the step once and replaying it runs the same
kernels, on the same memory, with one launch (PyTorch's "whole-network capture").

Rules the captured step relies on (checked by ``TrainConfig`` and :func:`make_capturable`):
fixed batch shapes (``train.seq_len``), one process, no autocast, nothing in the forward
that waits on the GPU (the model skips its data-dependent input checks while a capture is
running; the state bank takes its fast path, whose chunk counts are static), a capturable
AdamW whose learning rate is a device tensor (``CosineSchedule.apply`` fills it in place),
and parameters and slot-alive buffers that are only changed in place between replays.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["make_capturable", "GraphedTrainStep"]


def make_capturable(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Turn an AdamW into one whose step can be captured: device lr, device step counters."""
    for group in optimizer.param_groups:
        group["capturable"] = True
        group["lr"] = torch.tensor(float(group["lr"]), device=device, dtype=torch.float32)
    for st in optimizer.state.values():
        if "step" in st:
            st["step"] = torch.as_tensor(st["step"], dtype=torch.float32).to(device)


class GraphedTrainStep:
    """``step(batch) -> (loss, lm_loss, aux_loss, grad_norm)``, replaying one captured graph.

    Built after the eager warm-up steps (they create the optimizer state and cuBLAS
    workspaces outside the capture). The capture itself computes nothing; every call
    copies the batch into the graph's input buffers and replays it.
    """

    def __init__(self, loss_module: nn.Module, model: nn.Module, optimizer: torch.optim.Optimizer,
                 grad_clip: float, batch: dict[str, torch.Tensor]) -> None:
        self.inputs = {k: batch[k].clone() for k in ("input_ids", "attention_mask", "labels")}
        self.graph = torch.cuda.CUDAGraph()
        optimizer.zero_grad(set_to_none=True)  # gradients are allocated inside the graph's pool
        torch.cuda.synchronize()
        # thread_local: the DataLoader's pin-memory thread keeps running during the capture
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            loss, lm_loss, aux = loss_module(self.inputs["input_ids"], self.inputs["attention_mask"],
                                             self.inputs["labels"])
            loss.backward()
            if grad_clip > 0:
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            else:
                grad_norm = torch.zeros((), device=loss.device)
            optimizer.step()
        self.outputs = (loss, lm_loss, aux, grad_norm)

    def __call__(self, batch: dict[str, torch.Tensor]):
        for k, buf in self.inputs.items():
            if batch[k].shape != buf.shape:
                raise ValueError(f"cuda_graph: batch {k} has shape {tuple(batch[k].shape)}, the captured "
                                 f"step {tuple(buf.shape)} (set train.seq_len)")
            buf.copy_(batch[k], non_blocking=True)
        self.graph.replay()
        return self.outputs
