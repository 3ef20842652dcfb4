"""Run configuration: one YAML file with sections ``model``, ``task`` and ``train``.

    model:                 # `type`: a registered model type (default pulse), then its config's fields
      hidden_size: 128
      num_layers: 2
      num_states: 8
    task:                  # pulse.data.build_task(name, **other keys)
      name: story_world
      eval_size: 512
    train:                 # TrainConfig fields (below)
      steps: 2000
      batch_size: 64
      lr: 1.0e-3

``model.type`` is any name of the model registry (:func:`pulse.pretrained.registered_models`:
``pulse`` (the default), ``legacy_pulse``, ``transformer``, and whatever else was registered
with :func:`pulse.pretrained.register_model`); the other ``model`` keys are the fields of that
class's ``config_class``. ``vocab_size`` and the special-token ids of the model come from the
task's tokenizer unless given (a given ``vocab_size`` must be at least the tokenizer's).
Overrides from the command line use dotted keys (``train.steps=100``,
``model.hidden_size=64``); values are parsed as YAML scalars. Every error is a
:class:`~pulse.config.ConfigError` naming the offending key, e.g. ``train.lr: must be a
positive number, got 'fast'``.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pulse.config import ConfigError

__all__ = ["TrainConfig", "RunConfig", "load_run_config", "parse_override", "apply_overrides"]

SECTIONS = ("model", "task", "train")
DEFAULT_MODEL_TYPE = "pulse"  # model.type when the YAML gives none


@dataclass
class TrainConfig:
    """Optimisation, evaluation, checkpointing and state-bank schedule of one run.

    ``batch_size`` is per process: with ``torchrun --nproc_per_node=N`` a step sees
    ``N * batch_size`` sequences. ``seq_len`` is passed to the task (``None``: the task's
    own length). Steps are counted from 1 (the step number after the optimizer update).
    ``save_every``/``eval_every``/``prune_every``/``allocate_every`` = 0 turns the periodic
    action off (a final evaluation and save always happen). Pruning kills, in every state
    bank, the alive slots whose importance is below ``prune_threshold`` (default: the
    model's), or the ``prune_lowest`` least important ones when that is > 0; allocation
    revives ``allocate_n`` dead slots per bank. ``importance_reg``, when given, sets the
    model's ``importance_reg`` (the weight of the mean-importance penalty in the loss).
    ``amp``: ``auto`` = bf16 autocast on CUDA, none on CPU; ``bf16`` or ``none`` force it.
    ``find_unused_parameters`` (DDP): ``null`` = on for models with a state bank (whose
    update parameters go unused when a sequence completes no chunk), off otherwise.
    ``num_workers``: DataLoader worker processes that build batches ahead (``null`` = 2 on
    CUDA, 0 on CPU; batches are the same either way). ``max_time_s`` > 0: stop after this
    many seconds of training (evaluated, saved, and marked ``stopped_by_time`` in the metrics).
    ``cuda_graph``: capture the whole training step (forward, backward, clipping, AdamW) in one
    CUDA graph after ``graph_warmup`` eager steps and replay it: the same arithmetic with one
    launch per step instead of thousands. Needs CUDA, one process, a fixed ``seq_len``,
    ``amp: none``, and no prune/allocate schedule (they change the graph's inputs); models
    whose forward waits on the GPU (the key-value memory) cannot be captured.
    ``init_from``: a model folder (``save_pretrained`` or a run's output) whose weights start
    this run instead of a random init: a second stage with its own schedule. Its config must
    equal this run's model config; the folder is recorded in training.json and the model card.
    """

    steps: int = 1000
    batch_size: int = 32
    seq_len: int | None = None
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.98
    adam_eps: float = 1e-8
    grad_clip: float = 1.0
    eval_every: int = 0
    eval_size: int = 512
    eval_batch_size: int = 256
    save_every: int = 0
    keep_checkpoints: int = 2
    log_every: int = 10
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"
    find_unused_parameters: bool | None = None
    num_workers: int | None = None
    max_time_s: float = 0.0
    cuda_graph: bool = False
    graph_warmup: int = 3
    init_from: str | None = None
    # state bank
    prune_every: int = 0
    prune_at: list[int] = field(default_factory=list)
    prune_threshold: float | None = None
    prune_lowest: int = 0
    prune_start: int = 0
    allocate_every: int = 0
    allocate_at: list[int] = field(default_factory=list)
    allocate_n: int = 1
    importance_reg: float | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def bad(name: str, what: str) -> ConfigError:
            return ConfigError(f"train.{name}: {what}, got {getattr(self, name)!r}")

        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        def is_num(v: Any) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool)

        for name in ("steps", "batch_size", "eval_size", "eval_batch_size", "log_every", "allocate_n",
                     "keep_checkpoints"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise bad(name, "must be a positive integer")
        for name in ("warmup", "eval_every", "save_every", "seed", "prune_every", "prune_lowest",
                     "prune_start", "allocate_every"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 0:
                raise bad(name, "must be a non-negative integer")
        if self.num_workers is not None and (not is_int(self.num_workers) or self.num_workers < 0):
            raise bad("num_workers", "must be a non-negative integer or null")
        if not is_num(self.max_time_s) or self.max_time_s < 0:
            raise bad("max_time_s", "must be a non-negative number of seconds (0 = no limit)")
        if not isinstance(self.cuda_graph, bool):
            raise bad("cuda_graph", "must be true or false")
        if not is_int(self.graph_warmup) or self.graph_warmup < 1:
            raise bad("graph_warmup", "must be a positive integer")
        if self.cuda_graph:
            if self.seq_len is None:
                raise bad("seq_len", "must be set with cuda_graph (a graph has fixed shapes)")
            if self.amp not in ("none",):
                raise bad("amp", "must be 'none' with cuda_graph")
            if self.prune_every or self.prune_at or self.allocate_every or self.allocate_at:
                raise ConfigError("train.cuda_graph: cannot be combined with a prune/allocate schedule "
                                  "(prune after training instead)")
        if self.init_from is not None and (not isinstance(self.init_from, str) or not self.init_from):
            raise bad("init_from", "must be a model folder path or null")
        if self.seq_len is not None and (not is_int(self.seq_len) or self.seq_len < 2):
            raise bad("seq_len", "must be an integer >= 2 or null")
        if not is_num(self.lr) or not self.lr > 0:
            raise bad("lr", "must be a positive number")
        for name in ("min_lr_ratio", "beta1", "beta2"):
            v = getattr(self, name)
            if not is_num(v) or not 0.0 <= v <= 1.0 or (name.startswith("beta") and v >= 1.0):
                raise bad(name, "must be a number in [0, 1)" if name.startswith("beta") else "must be in [0, 1]")
        for name in ("weight_decay", "grad_clip"):
            if not is_num(getattr(self, name)) or getattr(self, name) < 0:
                raise bad(name, "must be a non-negative number (0 = off)")
        if not is_num(self.adam_eps) or not self.adam_eps > 0:
            raise bad("adam_eps", "must be a positive number")
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise bad("device", "must be 'auto', 'cpu', 'cuda' or 'cuda:N'")
        if self.amp not in ("auto", "bf16", "none"):
            raise bad("amp", "must be 'auto', 'bf16' or 'none'")
        if self.find_unused_parameters is not None and not isinstance(self.find_unused_parameters, bool):
            raise bad("find_unused_parameters", "must be true, false or null (auto)")
        for name in ("prune_at", "allocate_at"):
            v = getattr(self, name)
            if not isinstance(v, list) or not all(is_int(s) and s >= 1 for s in v):
                raise bad(name, "must be a list of step numbers >= 1")
        if self.prune_threshold is not None and (not is_num(self.prune_threshold)
                                                 or not 0.0 <= self.prune_threshold < 1.0):
            raise bad("prune_threshold", "must be a number in [0, 1) or null")
        if self.importance_reg is not None and (not is_num(self.importance_reg) or self.importance_reg < 0):
            raise bad("importance_reg", "must be a non-negative number or null")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> "TrainConfig":
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"train: expected a mapping of settings, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"train.{unknown[0]}: unknown setting (known: {', '.join(sorted(known))})")
        data = dict(data)
        for name in ("lr", "min_lr_ratio", "weight_decay", "grad_clip", "adam_eps", "beta1", "beta2",
                     "prune_threshold", "importance_reg"):
            if isinstance(data.get(name), str):  # YAML reads 1e-3 (no dot) as a string
                try:
                    data[name] = float(data[name])
                except ValueError:
                    pass
        return cls(**data)


@dataclass
class RunConfig:
    """The three sections of a run, validated. ``model`` and ``task`` stay plain dicts
    (``model`` may hold ``type``); :meth:`model_config` builds the model config."""

    model: dict[str, Any]
    task: dict[str, Any]
    train: TrainConfig

    @property
    def model_type(self) -> str:
        """``model.type``: a name of the model registry (default ``pulse``)."""
        return self.model.get("type", DEFAULT_MODEL_TYPE)

    @property
    def task_name(self) -> str:
        return self.task["name"]

    @property
    def task_kwargs(self) -> dict[str, Any]:
        return {k: v for k, v in self.task.items() if k != "name"}

    def to_dict(self) -> dict[str, Any]:
        return {"model": copy.deepcopy(self.model), "task": copy.deepcopy(self.task), "train": self.train.to_dict()}

    @classmethod
    def from_dict(cls, data: Any, source: str = "config") -> "RunConfig":
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a mapping with sections {list(SECTIONS)}, "
                              f"got {type(data).__name__}")
        unknown = sorted(set(data) - set(SECTIONS))
        if unknown:
            raise ConfigError(f"{unknown[0]}: unknown section (expected {', '.join(SECTIONS)})")
        model = data.get("model") or {}
        if not isinstance(model, dict):
            raise ConfigError(f"model: expected a mapping of model settings, got {type(model).__name__}")
        task = data.get("task")
        if task is None:
            raise ConfigError("task: missing section (needs at least `name`, e.g. name: story_world)")
        if isinstance(task, str):
            task = {"name": task}
        if not isinstance(task, dict):
            raise ConfigError(f"task: expected a mapping, got {type(task).__name__}")
        if "name" not in task:
            raise ConfigError("task.name: missing (one of the names of pulse.data.available_tasks())")
        from pulse.data import available_tasks

        if task["name"] not in available_tasks():
            raise ConfigError(f"task.name: unknown task {task['name']!r}; available: {available_tasks()}")
        from pulse.pretrained import registered_models

        model_type = model.get("type", DEFAULT_MODEL_TYPE)
        if not isinstance(model_type, str) or model_type not in registered_models():
            raise ConfigError(f"model.type: unknown model type {model_type!r}; registered: "
                              f"{', '.join(registered_models())}")
        train = TrainConfig.from_dict(data.get("train"))
        run = cls(model=dict(model), task=dict(task), train=train)
        # validate the model fields now (vocab filled in later from the tokenizer)
        run.model_config(vocab_size=run.model.get("vocab_size", 256), special_ids={})
        return run

    def model_config(self, vocab_size: int, special_ids: dict[str, int | None]):
        """The config of this run's model (``model_class(model.type).config_class``) for a
        tokenizer of ``vocab_size``. Special-token ids and ``train.importance_reg`` fill the
        fields of that name where the config has them."""
        from pulse.pretrained import model_class

        cls = model_class(self.model_type).config_class
        known = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else None
        fields = {k: v for k, v in self.model.items() if k != "type"}
        if "vocab_size" in fields:
            if isinstance(fields["vocab_size"], int) and fields["vocab_size"] < vocab_size:
                raise ConfigError(f"model.vocab_size: {fields['vocab_size']} is smaller than the "
                                  f"tokenizer's vocabulary ({vocab_size})")
        else:
            fields["vocab_size"] = vocab_size
        for key, value in special_ids.items():
            if known is None or key in known:
                fields.setdefault(key, value)
        if self.train.importance_reg is not None and (known is None or "importance_reg" in known):
            fields["importance_reg"] = self.train.importance_reg
        unknown = sorted(set(fields) - known) if known is not None else []
        if unknown:
            raise ConfigError(f"model.{unknown[0]}: unknown field for {cls.__name__} "
                              f"(model type {self.model_type!r})")
        try:
            return cls(**fields)
        except ConfigError as e:
            raise ConfigError(f"model.{e}") from None
        except TypeError as e:
            raise ConfigError(f"model: {e}") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.steps=100"`` -> (["train", "steps"], 100); the value is parsed as YAML."""
    import yaml

    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE with a dotted key, e.g. train.steps=100")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".")]
    if len(parts) < 2 or not all(parts):
        raise ConfigError(f"--set {text!r}: the key must be SECTION.NAME, e.g. model.hidden_size")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {key}: value {raw!r} is not valid YAML ({e})") from None
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: list[tuple[list[str], Any]]) -> dict[str, Any]:
    data = copy.deepcopy(data)
    for parts, value in overrides:
        if parts[0] not in SECTIONS:
            raise ConfigError(f"{'.'.join(parts)}: unknown section {parts[0]!r} (expected {', '.join(SECTIONS)})")
        node = data
        for p in parts[:-1]:
            if node.get(p) is None:
                node[p] = {}
            if not isinstance(node[p], dict):
                raise ConfigError(f"{'.'.join(parts)}: {p} is not a mapping")
            node = node[p]
        node[parts[-1]] = value
    return data


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config: {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if data is None:
        raise ConfigError(f"{path}: the file is empty (expected sections {', '.join(SECTIONS)})")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with sections {', '.join(SECTIONS)}, "
                          f"got {type(data).__name__}")
    return data


def load_run_config(path: str | os.PathLike | None, overrides: list[tuple[list[str], Any]] | None = None,
                    data: dict[str, Any] | None = None) -> RunConfig:
    """Read and validate ``path`` (or ``data``), applying dotted overrides first."""
    if data is None:
        if path is None:
            raise ConfigError("--config: a YAML file is required")
        data = read_yaml(path)
    data = apply_overrides(data, overrides or [])
    try:
        return RunConfig.from_dict(data, source=str(path or "config"))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path else str(e)) from None
