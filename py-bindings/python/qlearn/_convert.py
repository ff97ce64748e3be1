"""User input -> the service's JSON: states, action lists, experiences
(one by one or as numpy columns), model parameters and ids. Bad input
raises ValueError/TypeError here, before anything is sent."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional, Union

import numpy as np


def _state(value: Any, what: str = "state") -> Any:
    """A state in its JSON form: int, str or list of numbers."""
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, str):
        return value
    if isinstance(value, np.ndarray):
        if value.ndim != 1:
            raise ValueError(f"{what} must be a 1-d array, got {value.ndim} dimensions")
        return value.tolist()
    if isinstance(value, (float, np.floating)):
        raise TypeError(f"{what}: a float alone is not a state (use [x])")
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        out: list[Union[int, float]] = []
        for x in value:
            if isinstance(x, (bool, np.bool_, int, np.integer)):
                out.append(int(x))
            elif isinstance(x, (float, np.floating)):
                out.append(float(x))
            else:
                raise TypeError(f"{what} must hold numbers, got {type(x).__name__}")
        return out
    raise TypeError(f"{what} must be an int, a str, a sequence of numbers or a 1-d numpy array, "
                    f"got {type(value).__name__}")


def _actions(value: Any, what: str) -> Optional[list[int]]:
    if value is None:
        return None
    arr = np.asarray(value)
    if arr.dtype == np.bool_:
        return [int(i) for i in np.flatnonzero(arr)]
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        if arr.size == 0:
            return []
        raise TypeError(f"{what} must be a sequence of action indices or a bool mask")
    return [int(a) for a in arr]


def _experience(state: Any, action: Any, reward: Any, next_state: Any, done: bool, truncated: bool,
                next_action: Any, next_allowed_actions: Any) -> dict[str, Any]:
    if isinstance(action, (bool, float)) or not isinstance(action, (int, np.integer)):
        raise TypeError(f"action must be an int, got {type(action).__name__}")
    if not isinstance(reward, (int, float, np.integer, np.floating)) or isinstance(reward, bool):
        raise TypeError(f"reward must be a number, got {type(reward).__name__}")
    exp: dict[str, Any] = {"state": _state(state), "action": int(action), "reward": float(reward),
                           "next_state": _state(next_state, "next_state"),
                           "done": bool(done), "truncated": bool(truncated)}
    if next_action is not None:
        exp["next_action"] = int(next_action)
    if next_allowed_actions is not None:
        exp["next_allowed_actions"] = _actions(next_allowed_actions, "next_allowed_actions")
    return exp


def _column(values: Any, n: int, what: str, dtype: Any = None) -> np.ndarray[Any, Any]:
    arr = np.asarray(values, dtype=dtype)
    if arr.ndim != 1 or len(arr) != n:
        raise ValueError(f"{what} must be 1-d with {n} items (one per state), got shape {arr.shape}")
    if dtype is None and arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{what} must hold integers")
    return arr


def _states_column(states: Any, what: str) -> Union[np.ndarray[Any, Any], list[Any]]:
    if isinstance(states, np.ndarray):
        if states.ndim not in (1, 2):
            raise ValueError(f"{what} must be a 1-d or 2-d array, got {states.ndim} dimensions")
        if states.ndim == 1 and not np.issubdtype(states.dtype, np.integer):
            raise TypeError(f"{what}: a 1-d array must hold integer states (use a 2-d array for "
                            "array states)")
        return states
    return [_state(s, f"{what}[{i}]") for i, s in enumerate(states)]


def _experience_columns(states: Any, actions: Any, rewards: Any, next_states: Any, dones: Any,
                       truncateds: Any, next_actions: Any) -> dict[str, Any]:
    """Checks numpy columns (lengths, kinds) before anything is sent; they
    become JSON values a batch at a time (:func:`_experience_dicts`)."""
    s = _states_column(states, "states")
    n = len(s)
    s2 = _states_column(next_states, "next_states")
    if len(s2) != n:
        raise ValueError(f"next_states must have {n} items (one per state), got {len(s2)}")
    cols = {"state": s, "action": _column(actions, n, "actions"),
            "reward": _column(rewards, n, "rewards", np.float64), "next_state": s2,
            "done": _column(dones, n, "dones", np.bool_)}
    if truncateds is not None:
        cols["truncated"] = _column(truncateds, n, "truncateds", np.bool_)
    if next_actions is not None:
        cols["next_action"] = _column(next_actions, n, "next_actions")
    return cols


def _experience_dicts(cols: dict[str, Any], start: int, stop: int) -> list[dict[str, Any]]:
    """The experiences ``start:stop`` as JSON objects, converted a batch at a
    time (all at once, a million live lists and dicts would make the garbage
    collector's passes cost more than the conversion)."""
    part = {k: c[start:stop] for k, c in cols.items()}
    part = {k: c.tolist() if isinstance(c, np.ndarray) else c for k, c in part.items()}
    exps = [{"state": s, "action": a, "reward": r, "next_state": s2, "done": d}
            for s, a, r, s2, d in zip(part["state"], part["action"], part["reward"], part["next_state"],
                                      part["done"])]
    for key in ("truncated", "next_action"):
        if key in part:
            for exp, v in zip(exps, part[key]):
                exp[key] = v
    return exps


_EXPERIENCE_KEYS = ("state", "action", "reward", "next_state", "done", "truncated", "next_action",
                    "next_allowed_actions")
_ENGINE_FIELDS = ("learning_rate", "discount_factor", "epsilon", "epsilon_decay", "min_epsilon",
                  "initial_q", "algorithm", "exploration", "temperature", "seed", "action_names",
                  "state_bins")


def _bins(value: Any) -> Any:
    if value is None:
        return None
    return [b if isinstance(b, dict) else dict(zip(("low", "high", "bins"), b)) for b in value]


def _id(value: Any) -> str:
    if not isinstance(value, str) or not value or "/" in value or "?" in value:
        raise ValueError("an id must be a non-empty str without '/' or '?'")
    return value


def _params(params: dict[str, Any], drop_none: bool, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    unknown = sorted(set(params) - set(_ENGINE_FIELDS) - set(extra))
    if unknown:
        raise TypeError(f"unknown model parameter(s): {', '.join(unknown)}")
    out = {k: v for k, v in params.items() if not (drop_none and v is None)}
    if "state_bins" in out:
        out["state_bins"] = _bins(out["state_bins"])
    return out
