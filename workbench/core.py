"""Workbench logic without Streamlit: find and load checkpoints, encode text with clear
errors, pick example inputs, run traces. Pages call these through :mod:`workbench.state`,
which adds caching; tests call them directly.

Errors meant for the user are :class:`WorkbenchError` (a ``ValueError``) with a message
written for the screen; :class:`InputWarning` strings are shown but do not stop a run.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CHECKPOINT_DIR = REPO_ROOT / "checkpoints"
CHECKPOINT_DIR_ENV = "PULSE_WORKBENCH_CHECKPOINT_DIR"
DEFAULT_CHECKPOINT_NAME = "story-world-pulse"
MAX_TOKENS = 2048  # longest text the workbench traces
MAX_CHARS = 200_000  # refused before tokenising
# hook sites the workbench records (everything the pages show, nothing bulky besides)
TRACE_NAMES = [
    "blocks.*.attn.hook_q_features", "blocks.*.attn.hook_k_features", "blocks.*.attn.hook_normalizer",
    "blocks.*.attn.hook_decay", "blocks.*.hook_fusion_gate", "blocks.*.recurrent.hook_input_gate",
    "blocks.*.recurrent.hook_state", "blocks.*.memory.hook_read_scores", "blocks.*.memory.hook_read_weights",
    "blocks.*.memory.hook_read_slots", "blocks.*.states.hook_importance", "blocks.*.states.hook_alive",
    "blocks.*.states.hook_routing", "blocks.*.states.hook_*_gate", "blocks.*.states.hook_update_positions",
    "blocks.*.states.hook_read_weights",
]


class WorkbenchError(ValueError):
    """A problem to show the user (bad folder, bad text); the message is the explanation."""


# ------------------------------------------------------------------ checkpoints
def checkpoint_root() -> Path:
    return Path(os.environ.get(CHECKPOINT_DIR_ENV) or DEFAULT_CHECKPOINT_DIR)


def discover_checkpoints(root: str | os.PathLike | None = None) -> dict[str, Path]:
    """{name: folder} of every save_pretrained folder (has config.json) in ``root`` (default:
    ``$PULSE_WORKBENCH_CHECKPOINT_DIR`` or ``checkpoints/``), the default demo first."""
    root = Path(root) if root is not None else checkpoint_root()
    found: dict[str, Path] = {}
    if (root / "config.json").is_file():
        found[root.name] = root
    if root.is_dir():
        for sub in sorted(root.iterdir()):
            if sub.is_dir() and (sub / "config.json").is_file():
                found[sub.name] = sub
    order = sorted(found, key=lambda n: (n != DEFAULT_CHECKPOINT_NAME, n))
    return {n: found[n] for n in order}


def folder_key(path: str | os.PathLike) -> str:
    """Identity of a checkpoint folder's contents for caching: path + files' mtimes and sizes."""
    p = Path(path)
    parts = [str(p.resolve())]
    for name in ("config.json", "model.safetensors", "tokenizer.json", "task.json"):
        f = p / name
        if f.is_file():
            st = f.stat()
            parts.append(f"{name}:{st.st_mtime_ns}:{st.st_size}")
    return "|".join(parts)


@dataclass
class Checkpoint:
    """A loaded checkpoint: model (eval mode), tokenizer, task description and model card."""

    path: Path
    model: Any
    tokenizer: Any
    task: dict[str, Any] = field(default_factory=dict)
    card: str = ""
    key: str = ""

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config(self):
        return self.model.config

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def bank_layers(self) -> list[int]:
        return [i for i, _ in self.model.state_banks()]


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Load a PULSE save_pretrained folder with its tokenizer; every failure becomes a
    :class:`WorkbenchError` that says what is wrong with the folder."""
    from pulse import PulseForCausalLM, load_pretrained
    from pulse.data import load_tokenizer

    raw = str(path).strip()
    if not raw:
        raise WorkbenchError("No checkpoint folder given: enter the path of a save_pretrained folder.")
    p = Path(raw).expanduser()
    if not p.exists():
        raise WorkbenchError(f"Checkpoint folder {p} does not exist.")
    if not p.is_dir():
        raise WorkbenchError(f"{p} is a file, not a folder: give the save_pretrained folder that holds "
                             "config.json, model.safetensors and tokenizer.json.")
    if not (p / "config.json").is_file():
        raise WorkbenchError(f"{p} has no config.json: it is not a save_pretrained folder.")
    if not (p / "model.safetensors").is_file():
        others = sorted(f.name for f in p.iterdir() if f.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl"))
        extra = f" (found {', '.join(others)}: pickled weights are never loaded)" if others else ""
        raise WorkbenchError(f"{p} has no model.safetensors{extra}. The workbench loads safetensors only.")
    try:
        model = load_pretrained(p)
    except Exception as e:  # noqa: BLE001 - any failure is a broken or foreign folder
        raise WorkbenchError(f"Could not load the model in {p}: {e}") from e
    if not isinstance(model, PulseForCausalLM):
        raise WorkbenchError(f"{p} holds a {type(model).__name__}; the workbench inspects PULSE models "
                             "(config model_type 'pulse').")
    try:
        tokenizer = load_tokenizer(p)
    except FileNotFoundError as e:
        raise WorkbenchError(f"{p} has no tokenizer.json: save the tokenizer into the same folder "
                             "(tokenizer.save(folder)).") from e
    except Exception as e:  # noqa: BLE001
        raise WorkbenchError(f"The tokenizer in {p} is broken: {e}") from e
    if tokenizer.vocab_size > model.config.vocab_size:
        raise WorkbenchError(f"The tokenizer in {p} has {tokenizer.vocab_size} tokens but the model only "
                             f"{model.config.vocab_size}: they do not belong together.")
    task: dict[str, Any] = {}
    if (p / "task.json").is_file():
        try:
            task = json.loads((p / "task.json").read_text(encoding="utf-8"))
            if not isinstance(task, dict):
                task = {}
        except (json.JSONDecodeError, UnicodeDecodeError):
            task = {}
    card = ""
    if (p / "model_card.md").is_file():
        card = (p / "model_card.md").read_text(encoding="utf-8", errors="replace")
    model.eval()
    return Checkpoint(path=p, model=model, tokenizer=tokenizer, task=task, card=card, key=folder_key(p))


# ------------------------------------------------------------------ examples
@dataclass
class Example:
    text: str
    categories: list[str] | None = None  # ground-truth role of each token (story world)
    title: str = ""


def task_name(task: dict[str, Any]) -> str | None:
    name = task.get("name") or task.get("task")
    return name if isinstance(name, str) else None


def _story_config(task: dict[str, Any]):
    from pulse.data import StoryWorldConfig

    cfg = task.get("config")
    if isinstance(cfg, dict):
        try:
            return StoryWorldConfig.from_dict(cfg)
        except (TypeError, ValueError):
            pass
    return StoryWorldConfig()


def examples(ckpt: Checkpoint, n: int = 8) -> list[Example]:
    """Example inputs for a checkpoint: held-out story-world stories (with their per-token
    roles) for a story-world model, eval rows for an algorithmic task, else stories when the
    tokenizer knows the story-world words; [] when nothing fits."""
    name = task_name(ckpt.task)
    if name in ("mqar", "selective_copy", "induction"):
        try:
            from pulse.data import build_task

            cfg = ckpt.task.get("config") if isinstance(ckpt.task.get("config"), dict) else {}
            task = build_task(name, **cfg)
            batch = task.make_split("eval", n)
            out = []
            for i in range(batch["input_ids"].shape[0]):
                ids = batch["input_ids"][i][batch["attention_mask"][i] > 0].tolist()
                out.append(Example(task.tokenizer.decode(ids), None, f"{name} eval row {i}"))
            return out
        except Exception:  # noqa: BLE001 - fall back to stories below
            pass
    from pulse.data import generate_dataset

    cfg = _story_config(ckpt.task)
    stories = generate_dataset(n, cfg, seed=f"{cfg.seed}-eval")
    out = []
    for i, s in enumerate(stories):
        if getattr(ckpt.tokenizer, "alphabet", None) is not None:
            unknown = [w for w in s.tokens if ckpt.tokenizer.token_to_id(w) is None]
            if unknown:
                return []  # this tokenizer does not speak the story world
        out.append(Example(s.text, list(s.roles), f"story {i} ({len(s.tokens)} tokens)"))
    return out


def token_category(token: str) -> str:
    """Coarse category of a token for flow charts when no ground truth is known."""
    from pulse.data import story_world as sw

    t = token.strip().lower()
    if t in ("<pad>", "<unk>", "<bos>", "<eos>"):
        return "special"
    if t in sw.CHARACTER_NAMES:
        return "character"
    if t in sw.PLACE_NAMES:
        return "place"
    if t in sw.OBJECT_NAMES:
        return "object"
    if t in (".", "?", "!", ",", ";", ":", "|"):
        return "punct"
    if t in sw._QUESTION_WORDS:
        return "question"
    if t in sw._FUNCTION_WORDS:
        return "function"
    if t in sw._MOVE_VERBS or t in sw._DISTRACTOR_VERBS or t in ("picked", "grabbed", "took", "dropped", "put",
                                                                  "discarded"):
        return "verb"
    if len(t) > 1 and t[0] in "kvdt" and t[1:].isdigit():
        return {"k": "key", "v": "value", "d": "data", "t": "symbol"}[t[0]]
    if t.isdigit():
        return "number"
    return "word"


# ------------------------------------------------------------------ text
@dataclass
class Encoded:
    ids: list[int]
    tokens: list[str]
    warnings: list[str] = field(default_factory=list)


def display_token(tokenizer: Any, i: int) -> str:
    try:
        return tokenizer.decode([int(i)])
    except Exception:  # noqa: BLE001
        return f"#{int(i)}"


def encode_text(tokenizer: Any, text: Any, max_tokens: int = MAX_TOKENS) -> Encoded:
    """Token ids of ``text`` or a :class:`WorkbenchError` saying why not (empty, too long,
    not text). Unknown words / characters become warnings (they map to ``<unk>``)."""
    if not isinstance(text, str):
        raise WorkbenchError(f"The input must be text, got {type(text).__name__}.")
    if not text.strip():
        raise WorkbenchError("The text is empty: type or pick some text to trace.")
    if len(text) > MAX_CHARS:
        raise WorkbenchError(f"The text has {len(text):,} characters; the workbench accepts at most "
                             f"{MAX_CHARS:,}. Shorten it.")
    warnings: list[str] = []
    alphabet = getattr(tokenizer, "alphabet", None)
    if alphabet is not None:
        words = tokenizer.tokenize(text)
        unknown = sorted({w for w in words if tokenizer.token_to_id(w) is None})
        bad_chars = sorted({c for w in unknown for c in w if c not in alphabet})
        if unknown:
            shown = ", ".join(repr(w) for w in unknown[:12]) + (" …" if len(unknown) > 12 else "")
            warnings.append(f"{len(unknown)} word(s) are not in this model's vocabulary and are read as "
                            f"<unk>: {shown}.")
        if bad_chars:
            shown = " ".join(repr(c) for c in bad_chars[:20])
            warnings.append(f"Characters this tokenizer never saw: {shown}.")
    try:
        ids = tokenizer.encode(text)
    except Exception as e:  # noqa: BLE001
        raise WorkbenchError(f"The text could not be tokenised: {e}") from e
    if len(ids) == 0:
        raise WorkbenchError("The text has no tokens.")
    if len(ids) > max_tokens:
        raise WorkbenchError(f"The text has {len(ids):,} tokens; the workbench traces at most {max_tokens:,}. "
                             "Shorten it.")
    if len(ids) < 2:
        warnings.append("One token only: there is no next-token loss to show; add more text.")
    if alphabet is not None and ids and all(i == tokenizer.unk_token_id for i in ids):
        raise WorkbenchError("None of the words is in this model's vocabulary: every token would be <unk>. "
                             "Try an example story.")
    return Encoded(ids, [display_token(tokenizer, i) for i in ids], warnings)


# ------------------------------------------------------------------ runs
@dataclass
class Run:
    """One traced input: ids [T], display tokens, per-token categories, the Trace."""

    ids: list[int]
    tokens: list[str]
    categories: list[str]
    trace: Any
    text: str

    @property
    def T(self) -> int:
        return len(self.ids)

    def input_ids(self) -> torch.Tensor:
        return torch.tensor([self.ids], dtype=torch.long)

    def loss(self) -> np.ndarray:
        return self.trace["loss.per_token"][0].numpy()

    def mean_loss(self) -> float:
        v = self.loss()
        return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")


def trace_text(ckpt: Checkpoint, text: str, categories: list[str] | None = None,
               max_tokens: int = MAX_TOKENS) -> tuple[Run, list[str]]:
    """Encode and trace ``text``; returns the run and the input warnings."""
    from probes import run_with_trace

    enc = encode_text(ckpt.tokenizer, text, max_tokens)
    ids = torch.tensor([enc.ids], dtype=torch.long)
    with torch.no_grad():
        _, tr = run_with_trace(ckpt.model, ids, names=TRACE_NAMES, top_k=5, prompt=text)
    cats = categories if categories is not None and len(categories) == len(enc.ids) else \
        [token_category(t) for t in enc.tokens]
    tr.token_strings = [enc.tokens]
    return Run(enc.ids, enc.tokens, cats, tr, text), enc.warnings


def generate_text(ckpt: Checkpoint, prompt: str, max_new_tokens: int = 40, temperature: float = 1.0,
                  seed: int = 0) -> str:
    """Prompt followed by the model's continuation (greedy at temperature 1.0, else sampled)."""
    enc = encode_text(ckpt.tokenizer, prompt, MAX_TOKENS)
    if not 1 <= max_new_tokens <= MAX_TOKENS - len(enc.ids):
        raise WorkbenchError(f"Number of new tokens must be between 1 and {MAX_TOKENS - len(enc.ids)}.")
    ids = torch.tensor([enc.ids], dtype=torch.long)
    gen = torch.Generator().manual_seed(int(seed))
    kwargs: dict[str, Any] = {"do_sample": temperature != 1.0}
    if temperature != 1.0:
        kwargs["temperature"] = float(temperature)
    out = ckpt.model.generate(ids, max_new_tokens=int(max_new_tokens), generator=gen,
                              pad_token_id=ckpt.tokenizer.pad_token_id, **kwargs)
    new = [i for i in out[0, len(enc.ids):].tolist()]
    eos = ckpt.tokenizer.eos_token_id
    if eos in new:
        new = new[: new.index(eos) + 1]
    return ckpt.tokenizer.decode(enc.ids + new)


def window_bounds(T: int, start: int, width: int) -> tuple[int, int]:
    """[t0, t1) of a position window clipped to the sequence."""
    width = max(1, min(int(width), T))
    t0 = max(0, min(int(start), T - width))
    return t0, t0 + width
