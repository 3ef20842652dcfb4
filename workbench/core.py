"""Workbench logic without Streamlit: find and load checkpoints, encode text with clear
errors, pick example inputs, run traces. Pages call these through :mod:`workbench.state`,
which adds caching; tests call them directly.

A checkpoint's task is rebuilt from its task.json by ``pulse.data.task_record.load_task``
(the reader the trainer's writer is tested against). It decides the example inputs (the
task's held-out ``test`` split, the distribution the model was trained on) and the loss:
every loss is on the task's labels (``Task.labels_for``: the answer tokens of an
answers-only model, every token of a language model), named by ``loss_name``. When the task
cannot be rebuilt, ``Checkpoint.task_problem`` says why; the app shows it, offers no
example stories and scores every token ("all-token loss").

Errors meant for the user are :class:`WorkbenchError` (a ``ValueError``) with a message
written for the screen; :class:`InputWarning` strings are shown but do not stop a run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CHECKPOINT_DIR = REPO_ROOT / "checkpoints"
CHECKPOINT_DIR_ENV = "PULSE_WORKBENCH_CHECKPOINT_DIR"
DEFAULT_CHECKPOINT_NAME = "story-world-bank"
MAX_TOKENS = 2048  # longest text the workbench traces
MAX_CHARS = 200_000  # refused before tokenising
# hook sites the workbench records: those the registered frames read, by declared kind and
# layout (probes.frames.frame_hooks; a names filter for run_with_trace), nothing bulky besides
from probes.frames import frame_hooks  # noqa: E402

TRACE_NAMES = frame_hooks()


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


def sites_have(sites: Any, kind: str) -> bool:
    """Whether hook ``sites`` ({name: HookSite}, :func:`pulse.hooks.hook_sites`) hold every
    required hook need of the frame ``kind`` (:mod:`probes.frames`; metadata needs are the
    trace's, not the model's, and are not asked here)."""
    from probes.frames import frame_spec

    values = list(sites.values())
    return all(any(n.matches_site(s) for s in values) for n in frame_spec(kind).required if n.metadata is None)


def sites_layers(sites: Any, kind: str) -> list[int]:
    """Layers of the hook sites that give the frame ``kind`` (by its first required hook need),
    sorted; [] when the sites do not hold the frame."""
    from probes.frames import frame_spec
    from pulse.hooks import layer_of

    if not sites_have(sites, kind):
        return []
    need = next(n for n in frame_spec(kind).required if n.metadata is None)
    return sorted({layer_of(name) for name, s in sites.items() if need.matches_site(s) and layer_of(name) is not None})


_SITES_CACHE: dict[str, Any] = {}


def folder_sites(folder: str | os.PathLike) -> dict[str, Any]:
    """The hook sites of the model in ``folder`` (loaded once per folder contents; {} when it
    does not load)."""
    key = folder_key(folder)
    if key not in _SITES_CACHE:
        from probes.adapters import load_pretrained
        from pulse.hooks import hook_sites

        try:
            _SITES_CACHE[key] = hook_sites(load_pretrained(folder))
        except Exception:  # noqa: BLE001 - a broken folder has nothing
            _SITES_CACHE[key] = {}
    return _SITES_CACHE[key]


def checkpoints_with(kind: str, root: str | os.PathLike | None = None) -> list[str]:
    """Names of the discovered checkpoints whose models have the hook sites of the frame
    ``kind`` (e.g. "memory_reads"): where a page that needs it can look."""
    return [name for name, folder in discover_checkpoints(root).items() if sites_have(folder_sites(folder), kind)]


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
    """A loaded checkpoint: model (eval mode), tokenizer, its task and model card.

    ``task``: the ``pulse.data`` Task rebuilt from task.json, or None; then ``task_problem``
    says why (no task.json, a record that cannot be rebuilt, a tokenizer that does not match).
    ``task_record``: task.json as written by the trainer (``{name, kwargs, describe}``)."""

    path: Path
    model: Any
    tokenizer: Any
    task: Any = None
    task_record: dict[str, Any] = field(default_factory=dict)
    task_problem: str = ""
    card: str = ""
    key: str = ""
    _sites: Any = field(default=None, repr=False, compare=False)

    @property
    def sites(self) -> dict[str, Any]:
        """{name: HookSite} of the model (:func:`pulse.hooks.hook_sites`): what it can show."""
        if self._sites is None:
            from pulse.hooks import hook_sites

            self._sites = hook_sites(self.model)
        return self._sites

    def has(self, kind: str) -> bool:
        """Whether the model has the hook sites of the frame ``kind`` (see :func:`sites_have`)."""
        return sites_have(self.sites, kind)

    def frame_layers(self, kind: str) -> list[int]:
        """The layers that give the frame ``kind`` (see :func:`sites_layers`)."""
        return sites_layers(self.sites, kind)

    @property
    def loss_name(self) -> str:
        """Which tokens losses are on: the task's (e.g. "answer-token loss"), else "all-token loss"."""
        return self.task.loss_name if self.task is not None else "all-token loss"

    def labels_for(self, ids: torch.Tensor) -> torch.Tensor:
        """The labels the model was trained on for these ids (``Task.labels_for``); without a
        task, every token (the all-token loss)."""
        return self.task.labels_for(ids) if self.task is not None else ids.clone()

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config(self):
        return self.model.config

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def bank_layers(self) -> list[int]:
        """Layers with a state bank: those that route tokens to slots (the "routing" frame)."""
        return self.frame_layers("routing")


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Load a save_pretrained folder with its tokenizer: a PULSE model, or a family with a
    registered adapter (:func:`probes.adapters.load_pretrained`, chosen by config.json's
    ``model_type``); every failure becomes a :class:`WorkbenchError` that says what is wrong
    with the folder."""
    from probes.adapters import load_pretrained
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
    task, record, problem = _load_task(p, model)
    tokenizer = _declared_normalization(tokenizer, task)
    card = ""
    if (p / "model_card.md").is_file():
        card = (p / "model_card.md").read_text(encoding="utf-8", errors="replace")
    model.eval()
    return Checkpoint(path=p, model=model, tokenizer=tokenizer, task=task, task_record=record, task_problem=problem,
                      card=card, key=folder_key(p))


def _declared_normalization(tokenizer: Any, task: Any) -> Any:
    """The tokenizer to read text with. A word tokenizer saved before tokenizers recorded their
    normalisation (``normalization_declared`` False) reads text as its task's tokenizer does
    when that one has the same vocabulary: the task made the training text, so its
    normalisation (e.g. the story world's lower case, punctuation as words) is how the model
    was trained. Any other tokenizer is used as saved (one made without lower-casing is never
    lower-cased)."""
    if getattr(tokenizer, "normalization_declared", True) or task is None:
        return tokenizer
    own = getattr(task, "tokenizer", None)
    if own is None or getattr(own, "vocab", None) != getattr(tokenizer, "vocab", None):
        return tokenizer
    if not hasattr(own, "normalize"):
        return tokenizer
    return own


def tokenizer_signature(path: str | os.PathLike) -> str:
    """What a checkpoint's tokenizer maps text to, for telling whether two checkpoints can read
    the same text alike: the word list of a word tokenizer, the BPE file of a BPE one (as a
    string; "" when the folder has no readable tokenizer.json)."""
    import hashlib
    import json

    p = Path(path)
    try:
        meta = json.loads((p / "tokenizer.json").read_text(encoding="utf-8"))
        if meta.get("type") == "word":
            return "word:" + "\n".join(meta.get("vocab") or [])
        hf = p / str(meta.get("hf_file") or "bpe.json")
        return f"{meta.get('type')}:" + hashlib.sha256(hf.read_bytes()).hexdigest()
    except Exception:  # noqa: BLE001 - unreadable: matches nothing
        return ""


def trained_on(ckpt: Checkpoint) -> str:
    """The task's ``train_on`` ("answers" or "all"), or "" when unknown (no task)."""
    if ckpt.task is not None and getattr(ckpt.task, "train_on", None):
        return str(ckpt.task.train_on)
    rec = ckpt.task_record or {}
    return str((rec.get("kwargs") or {}).get("train_on") or (rec.get("describe") or {}).get("train_on") or "")


def trained_to_produce(ckpt: Checkpoint) -> str:
    """One sentence for the generation controls: what this model learned to predict, so what
    its continuation of a prompt can mean."""
    on = trained_on(ckpt)
    name = (ckpt.task_record or {}).get("name") or getattr(ckpt.task, "name", "") or "its task"
    if on == "answers":
        where = ("the token after each '?' (the answer to a question about the story)" if name == "story_world"
                 else "the answer positions of its task")
        return (f"This model ({name}, trained on answers only) learned to predict only {where}; it was never "
                "trained to continue the text, so anything it writes elsewhere means little (greedy decoding "
                "then often repeats one word). Give a prompt that ends with a question, e.g. "
                "'mary went to the kitchen . where is mary ?', and read the first generated token: its answer."
                if name == "story_world" else
                f"This model ({name}, trained on answers only) learned to predict only {where}; elsewhere "
                "its continuation means little (greedy decoding then often repeats one token).")
    if on == "all":
        return (f"This model ({name}) was trained to predict every next token, so it continues the text "
                "in the style of its training data.")
    return ("What this model was trained to predict is unknown (no task.json): its continuation may mean little.")


NO_TASK_CONSEQUENCE = ("The workbench therefore does not know which tokens this model was trained to predict: "
                       "every loss shown is the all-token loss, and there are no example stories (type a text).")


def _load_task(p: Path, model: Any) -> tuple[Any, dict[str, Any], str]:
    """(task or None, task.json record or {}, the reason there is no task or "")."""
    from pulse.data.task_record import TaskRecordError, load_task

    try:
        task, record = load_task(p)
    except TaskRecordError as e:
        return None, {}, f"No task for this checkpoint: {e}. {NO_TASK_CONSEQUENCE}"
    except Exception as e:  # noqa: BLE001 - e.g. a text task whose data is not on this machine; shown, not hidden
        return None, {}, (f"The task in {p / 'task.json'} could not be rebuilt: {type(e).__name__}: {e}. "
                          f"{NO_TASK_CONSEQUENCE}")
    if task.vocab_size > model.config.vocab_size:
        return None, record, (f"The task in {p / 'task.json'} ({record['name']}) has {task.vocab_size} tokens but "
                              f"the model only {model.config.vocab_size}: they do not belong together. "
                              f"{NO_TASK_CONSEQUENCE}")
    return task, record, ""


# ------------------------------------------------------------------ examples
@dataclass
class Example:
    text: str
    categories: list[str] | None = None  # ground-truth role of each token (story world)
    title: str = ""


def examples(ckpt: Checkpoint, n: int = 8) -> list[Example]:
    """Example inputs from the checkpoint's own task, held-out ``test`` split (``eval`` for
    text tasks): story-world stories with their per-token roles, or decoded rows. [] when the
    checkpoint has no task (``ckpt.task_problem`` says why). A task that cannot make its
    split raises a :class:`WorkbenchError` naming the task."""
    task = ckpt.task
    if task is None:
        return []
    try:
        if hasattr(task, "stories"):  # story world: the generated stories, with ground truth
            return [Example(s.text, list(s.roles), f"test story {i} ({len(s.tokens)} tokens, "
                                                   f"{len(s.questions)} question{'s' if len(s.questions) != 1 else ''})")
                    for i, s in enumerate(task.stories("test", n))]
        split = "test" if task.name != "text" else "eval"
        batch = task.make_split(split, n)
    except Exception as e:  # noqa: BLE001
        raise WorkbenchError(f"Could not make example inputs from the task {task.name!r} of {ckpt.path}: "
                             f"{type(e).__name__}: {e}") from e
    out = []
    for i in range(batch["input_ids"].shape[0]):
        ids = batch["input_ids"][i][batch["attention_mask"][i] > 0].tolist()
        out.append(Example(task.tokenizer.decode(ids), None, f"{task.name} {split} row {i}"))
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
    normalized: str = ""  # the text as the tokenizer reads it ("" when normalisation changed nothing)


def normalize_text(tokenizer: Any, text: str) -> str:
    """``text`` as ``tokenizer`` reads it (its own :meth:`normalize`; unchanged without one)."""
    norm = getattr(tokenizer, "normalize", None)
    return norm(text) if callable(norm) else text


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
    normalized = normalize_text(tokenizer, text)
    return Encoded(ids, [display_token(tokenizer, i) for i in ids], warnings,
                   normalized if normalized != " ".join(text.split()) else "")


# ------------------------------------------------------------------ runs
@dataclass
class Run:
    """One traced input: ids [T], display tokens, per-token categories, the Trace."""

    ids: list[int]
    tokens: list[str]
    categories: list[str]
    trace: Any
    text: str
    labels: list[int] = field(default_factory=list)  # the scored targets, -100 = not scored
    loss_name: str = "all-token loss"

    @property
    def T(self) -> int:
        return len(self.ids)

    def input_ids(self) -> torch.Tensor:
        return torch.tensor([self.ids], dtype=torch.long)

    def label_ids(self) -> torch.Tensor:
        """[1, T] labels of this run (the checkpoint's task's; every token without a task)."""
        return torch.tensor([self.labels or self.ids], dtype=torch.long)

    def loss(self) -> np.ndarray:
        """[T] per-token loss on the labelled tokens (NaN on the tokens the model is not scored on)."""
        return self.trace["loss.per_token"][0].numpy()

    def n_loss_tokens(self) -> int:
        return int(np.isfinite(self.loss()).sum())

    def mean_loss(self) -> float:
        """Mean of :meth:`loss` over the labelled tokens (:attr:`loss_name`); NaN when there are none."""
        v = self.loss()
        return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")

    def loss_label(self) -> str:
        """e.g. "answer-token loss, n=2": what :meth:`mean_loss` is over."""
        return f"{self.loss_name}, n={self.n_loss_tokens()}"

    def no_loss_reason(self) -> str:
        """Why there is no loss to show ("" when there is one)."""
        if self.n_loss_tokens():
            return ""
        if self.loss_name == "answer-token loss":
            return ("This text has no answer tokens: the model was trained to predict only the answers "
                    "(the token after each '?'), so there is no loss to show. Add a question, e.g. "
                    "'where is mary ? kitchen .'")
        return "One token only: there is no next-token loss to show."


def loss_explanation(loss_name: str) -> str:
    """One phrase saying which tokens a loss named ``loss_name`` is on."""
    return {"answer-token loss": "the answer tokens (the token after each '?' in a story, the answer positions of "
                                 "an algorithmic task), the only tokens this model was trained to predict",
            "all-token loss": "every token after the first (the next-token loss of a language model; also what a "
                              "folder without a task gets)"}.get(loss_name, loss_name)


def fmt_loss(value: float, digits: int = 3) -> str:
    """A loss for a metric: the number, or "n/a" when there are no scored tokens (NaN)."""
    return f"{value:.{digits}f}" if np.isfinite(value) else "n/a"


def trace_text(ckpt: Checkpoint, text: str, categories: list[str] | None = None,
               max_tokens: int = MAX_TOKENS) -> tuple[Run, list[str]]:
    """Encode and trace ``text``; returns the run and the input warnings."""
    from probes import run_with_trace

    enc = encode_text(ckpt.tokenizer, text, max_tokens)
    ids = torch.tensor([enc.ids], dtype=torch.long)
    labels = ckpt.labels_for(ids)
    with torch.no_grad():
        _, tr = run_with_trace(ckpt.model, ids, names=TRACE_NAMES, top_k=5, prompt=text, labels=labels)
    tr.metadata["loss"] = ckpt.loss_name
    cats = categories if categories is not None and len(categories) == len(enc.ids) else \
        [token_category(t) for t in enc.tokens]
    tr.token_strings = [enc.tokens]
    return Run(enc.ids, enc.tokens, cats, tr, text, labels[0].tolist(), ckpt.loss_name), enc.warnings


def generate_text(ckpt: Checkpoint, prompt: str, max_new_tokens: int = 40, temperature: float = 0.0,
                  seed: int = 0, top_k: int | None = None, top_p: float | None = None) -> str:
    """Prompt followed by the model's continuation. ``temperature`` 0 is greedy decoding (always
    the most likely token; ``top_k``/``top_p``/``seed`` then do nothing); above 0 tokens are
    sampled from the softmax at that temperature, restricted to the ``top_k`` most likely tokens
    (None or 0: all) and to the smallest set whose probability reaches ``top_p`` (None or 1: all),
    with ``seed`` fixing the draw."""
    enc = encode_text(ckpt.tokenizer, prompt, MAX_TOKENS)
    if not 1 <= max_new_tokens <= MAX_TOKENS - len(enc.ids):
        raise WorkbenchError(f"Number of new tokens must be between 1 and {MAX_TOKENS - len(enc.ids)}.")
    if not temperature >= 0:
        raise WorkbenchError(f"Temperature must be 0 (greedy) or more, got {temperature}.")
    if top_p is not None and not 0 < top_p <= 1:
        raise WorkbenchError(f"top-p must be in (0, 1], got {top_p}.")
    ids = torch.tensor([enc.ids], dtype=torch.long)
    gen = torch.Generator().manual_seed(int(seed))
    kwargs: dict[str, Any] = {"do_sample": temperature > 0}
    if temperature > 0:
        kwargs["temperature"] = float(temperature)
        if top_k:
            kwargs["top_k"] = int(top_k)
        if top_p is not None and top_p < 1:
            kwargs["top_p"] = float(top_p)
    import inspect

    if "generator" in inspect.signature(ckpt.model.generate).parameters:
        out = ckpt.model.generate(ids, max_new_tokens=int(max_new_tokens), generator=gen,
                                  pad_token_id=ckpt.tokenizer.pad_token_id, **kwargs)
    else:  # a generate without a generator argument (Hugging Face's): the seed fixes the global draw
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            out = ckpt.model.generate(ids, max_new_tokens=int(max_new_tokens),
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
