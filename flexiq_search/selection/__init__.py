"""Channel selection: which groups go 4-bit at each nested ratio level. Strategies register here."""

from . import random_order as _random_order, range as _range  # noqa: F401  (registration side effects)
from .base import (
    LayerSelection, Selection, SelectionStrategy, apply_selection, create_strategy, list_strategies,
    register_strategy, selection_from_scores,
)

__all__ = [
    "LayerSelection", "Selection", "SelectionStrategy", "apply_selection", "create_strategy",
    "list_strategies", "register_strategy", "selection_from_scores",
]
