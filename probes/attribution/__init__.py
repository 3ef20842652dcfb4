"""Captum attributions: input tokens (integrated gradients) and state-bank slots."""

from probes.attribution.integrated_gradients import (
    TokenAttribution,
    answer_index,
    completeness_error,
    token_attributions,
)
from probes.attribution.state_attribution import SlotAttribution, slot_attributions

__all__ = ["TokenAttribution", "token_attributions", "answer_index", "completeness_error",
           "SlotAttribution", "slot_attributions"]
