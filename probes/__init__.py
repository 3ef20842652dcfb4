"""probes: instrumentation and analysis of PULSE models.

Tracing (``trace``, ``run_with_trace``, ``Trace``), tidy tables (``tr.frame(kind)``),
Parquet export (``tr.to_parquet``, ``Trace.from_parquet``; long texts:
``trace_to_parquet_streaming``, ``probes.trace_stream``),
decay-weighted attention (``decay_attention_matrix``, ``head_summary``), interventions
(``intervene``, ``compare`` and the concrete ones), Captum attributions
(``probes.attribution``), linear probes, claim checks, and what a model uses (``measure_usage``,
``checkpoint_usage``: accuracy and loss with each mechanism off, ``probes.usage``). Imports one way: probes -> pulse
(``tests/test_import_graph.py``). Hook layouts and kinds are the sites' own declarations
(``pulse.hooks``): ``hook_sites(model)``.
"""

from probes.attention import decay_attention_matrix, decay_bound, half_life, head_summary
from probes.claims import (
    importance_predicts_ablation,
    pruning_beats_random,
    slot_specialisation,
    slower_decay_attends_further,
)
from probes.frames import FRAME_KINDS, available_kinds, frame
from probes.interventions import (
    Intervention,
    InterventionResult,
    ablate_slot,
    clamp_gate,
    compare,
    intervene,
    memory_off,
    patch_activation,
    prune_slots,
    set_decay,
)
from probes.linear_probes import fit_softmax_probe, run_probes, slot_token_features, token_features
from probes.parquet import TraceFormatError, write_trace
from probes.usage import UsageCacheError, UsageReport, checkpoint_usage, find_mechanisms, measure_usage
from probes.trace import (SCHEMA_VERSION, Trace, hook_sites, per_token_loss, read_trace, run_with_trace, select_hooks,
                          trace)
from probes.trace_stream import trace_to_parquet_streaming

__all__ = [
    "SCHEMA_VERSION", "Trace", "trace", "run_with_trace", "hook_sites", "select_hooks", "per_token_loss",
    "FRAME_KINDS", "available_kinds", "frame",
    "TraceFormatError", "read_trace", "write_trace", "trace_to_parquet_streaming",
    "decay_attention_matrix", "head_summary", "half_life", "decay_bound",
    "Intervention", "InterventionResult", "intervene", "compare", "ablate_slot", "prune_slots", "clamp_gate",
    "memory_off", "set_decay", "patch_activation",
    "fit_softmax_probe", "run_probes", "token_features", "slot_token_features",
    "importance_predicts_ablation", "slot_specialisation", "pruning_beats_random", "slower_decay_attends_further",
    "UsageReport", "UsageCacheError", "measure_usage", "checkpoint_usage", "find_mechanisms",
]
