"""Pure Plotly chart builders of the workbench: data in, ``plotly.graph_objects.Figure`` out.
No Streamlit here, so every chart is testable on its own. ``style`` holds what all of them share:
one colour scale per quantity, token tick labels thinned to a readable number, heights."""

from workbench.charts.attention import decay_attention_heatmap, half_life_bars
from workbench.charts import style
from workbench.charts.claims import claim_verdicts
from workbench.charts.states import (gates_over_time, importance_bars, memory_reads_heatmap, per_slot_bars,
                                     routing_sankey, slot_attribution, slot_heatmap, token_lines)
from workbench.charts.tokens import (loss_comparison, loss_delta_bars, loss_strip, token_attribution_bars,
                                     top_predictions)
from workbench.charts.style import shared_range
from workbench.charts.usage import usage_bars

__all__ = [
    "decay_attention_heatmap", "half_life_bars", "claim_verdicts", "gates_over_time", "importance_bars",
    "memory_reads_heatmap", "per_slot_bars", "routing_sankey", "slot_attribution", "slot_heatmap", "token_lines",
    "loss_comparison", "loss_delta_bars", "loss_strip", "token_attribution_bars", "top_predictions", "usage_bars",
    "shared_range", "style",
]
