"""Training helpers: run configuration (YAML), the deterministic data stream, optimizer and
schedule, pickle-free resumable checkpoints, evaluation, and process-group set-up.
The entry points are ``python -m pulse.train`` and ``python -m pulse.evaluate``."""

from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .config import RunConfig, TrainConfig, load_run_config
from .data import train_batch
from .evaluation import evaluate_model
from .optim import CosineSchedule, build_optimizer, flatten_optimizer_state, unflatten_optimizer_state

__all__ = [
    "RunConfig", "TrainConfig", "load_run_config", "train_batch", "evaluate_model", "CosineSchedule",
    "build_optimizer", "flatten_optimizer_state", "unflatten_optimizer_state", "save_checkpoint",
    "load_checkpoint", "latest_checkpoint",
]
