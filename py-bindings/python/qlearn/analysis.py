"""The Q-table as a table for analysis, for a local :class:`qlearn.QLearner`
and a hosted model (:class:`qlearn.RemoteModel`) alike.

Both give ``to_numpy()`` -> ``(states, q)``: the stored states in the order
they were first seen and a float64 matrix of shape ``(len(states),
n_actions)``. :func:`to_dataframe` turns that into a pandas DataFrame (pandas
is optional: the rest of qlearn does not need it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import numpy as np


def frame(states: Sequence[Any], q: np.ndarray[Any, Any],
          action_names: Optional[Sequence[str]] = None) -> Any:
    """A DataFrame with one row per state (the index) and one column per
    action (named by ``action_names``, else the action index), plus
    ``value`` (max over actions) and ``greedy_action`` (the lowest index
    among equal best values)."""
    try:
        import pandas as pd  # type: ignore[import-untyped,unused-ignore]
    except ImportError as e:
        raise ImportError("to_dataframe needs pandas: pip install pandas") from e
    n_actions = q.shape[1] if q.ndim == 2 else 0
    columns = list(action_names) if action_names else list(range(n_actions))
    df = pd.DataFrame(q, columns=columns)
    df.index = pd.Index(list(states), dtype=object, name="state")
    df["value"] = q.max(axis=1) if len(states) else np.empty(0)
    df["greedy_action"] = q.argmax(axis=1) if len(states) else np.empty(0, dtype=np.int64)
    return df


def to_dataframe(model: Any) -> Any:
    """The Q-table of a local :class:`qlearn.QLearner` as a DataFrame (see
    :func:`frame`). For a hosted model use ``RemoteModel.to_dataframe()``."""
    if not hasattr(model, "to_numpy") or not hasattr(model, "action_names"):
        raise TypeError(f"expected a QLearner, got {type(model).__name__}")
    states, q = model.to_numpy()
    return frame(states, q, model.action_names)
