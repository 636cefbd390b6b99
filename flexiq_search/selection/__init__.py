"""Channel selection: which groups go 4-bit at each nested ratio level. Strategies register here."""

from . import (  # noqa: F401  (registration side effects)
    evolution as _evolution, greedy_error as _greedy_error, hawq as _hawq, random_order as _random_order,
    range as _range, uniform as _uniform,
)
from .base import (
    LayerSelection, Selection, SelectionStrategy, apply_selection, create_strategy, list_strategies,
    register_strategy, selection_from_scores,
)

__all__ = [
    "LayerSelection", "Selection", "SelectionStrategy", "apply_selection", "create_strategy",
    "list_strategies", "register_strategy", "selection_from_scores",
]
