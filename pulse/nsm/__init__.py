"""Neural State Machine parts: propagator, router, manager, layers and the LM state bank."""

from pulse.nsm.allocator import AdaptiveStateAllocator
from pulse.nsm.cells import GATE_NAMES, GATE_TYPES, GatedCell, SlotCommunication
from pulse.nsm.hierarchical import HierarchicalStateManager
from pulse.nsm.layers import HybridAttention, NSMLayer, SparseStateAttention, TokenStateAttention
from pulse.nsm.manager import SlotBookkeeping, StateManager
from pulse.nsm.propagator import PropagatorOutput, StatePropagator
from pulse.nsm.router import TokenToStateRouter
from pulse.nsm.simple import SimpleNSM
from pulse.nsm.state_bank import StateBank

__all__ = [
    "AdaptiveStateAllocator",
    "GATE_NAMES",
    "GATE_TYPES",
    "GatedCell",
    "HierarchicalStateManager",
    "HybridAttention",
    "NSMLayer",
    "PropagatorOutput",
    "SimpleNSM",
    "SlotBookkeeping",
    "SlotCommunication",
    "SparseStateAttention",
    "StateBank",
    "StateManager",
    "StatePropagator",
    "TokenStateAttention",
    "TokenToStateRouter",
]
