"""The module-level pieces of the client's operations (how a batch, a
page of the Q-table or of the decision log, and a reward are asked for and
read back), shared by :mod:`qlearn.client` and :mod:`qlearn.remote`."""

from __future__ import annotations

import datetime as _dt
import json
from typing import Any, Optional, Union

import numpy as np

from ._calls import _Call, _json, _Plan
from ._convert import (
    _experience_dicts,
    _id,
)
from .errors import QlearnError
from .types import (
    Decision,
    DecisionPage,
    Episode,
    EpisodePage,
    ModelInfo,
    RewardError,
    RewardReceipt,
    Status,
    UpdateResult,
    from_json,
)

#: Most experiences the service takes in one ``POST /update/batch``.
MAX_BATCH = 1000
#: Most Q-table rows one ``GET /status`` page holds.
MAX_PAGE = 1000


def _key(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty str")
    return value


def _reward_item(decision_id: Any, value: Any, reward_id: Any, final: Any) -> dict[str, Any]:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"value must be a number, got {type(value).__name__}")
    item: dict[str, Any] = {"decision_id": _key(decision_id, "decision_id"), "value": float(value)}
    if reward_id is not None:
        item["reward_id"] = _key(reward_id, "reward_id")
    if final:
        item["final"] = True
    return item


def _reward_results(r: Any) -> list[Union[RewardReceipt, RewardError]]:
    out: list[Union[RewardReceipt, RewardError]] = []
    for x in r.json()["results"]:
        if x.get("error") is not None:
            out.append(RewardError(str(x["decision_id"]), str(x["error"].get("code", "")),
                                   str(x["error"].get("message", ""))))
        else:
            out.append(from_json(RewardReceipt, x))
    return out


_DECISION_STATUSES = ("open", "closed", "applied", "expired")


def _unix(value: Any, name: str) -> int:
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            raise ValueError(f"{name} must be an aware datetime (with a tzinfo)")
        return int(value.timestamp())
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be Unix seconds (int) or a datetime")
    return int(value)


def _decision_filter(status: Optional[str], since: Any, until: Any) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if status is not None:
        if status not in _DECISION_STATUSES:
            raise ValueError(f"status must be one of {', '.join(_DECISION_STATUSES)}")
        params["status"] = status
    if since is not None:
        params["since"] = _unix(since, "since")
    if until is not None:
        params["until"] = _unix(until, "until")
    return params


def _decisions_call(model_id: str, status: Optional[str], since: Any, until: Any, offset: int,
                    limit: int) -> _Call[DecisionPage]:
    if not isinstance(offset, int) or offset < 0:
        raise ValueError("offset must be an int >= 0")
    if not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be an int in 1..={MAX_PAGE}")
    params = {**_decision_filter(status, since, until), "offset": offset, "limit": limit}
    return _Call("GET", f"/models/{_id(model_id)}/decisions", _json(DecisionPage), params=params)


def _episodes_call(model_id: str, status: Optional[str], after: Optional[str],
                   limit: int) -> _Call[EpisodePage]:
    params: dict[str, Any] = {"limit": limit}
    if status is not None:
        if status not in ("open", "ended"):
            raise ValueError("status must be 'open' or 'ended'")
        params["status"] = status
    if after is not None:
        params["after"] = _key(after, "after")
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(f"limit must be an int, got {type(limit).__name__}")
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be in 1..={MAX_PAGE}")
    return _Call("GET", f"/models/{_id(model_id)}/episodes", _episode_page, params=params)


def _episode_page(r: Any) -> EpisodePage:
    body = r.json()
    episodes = [from_json(Episode, {**e, "learned_return": e.get("return")}) for e in body["episodes"]]
    return EpisodePage(episodes, body.get("next_after"))


def _next_decision_offset(page: DecisionPage, offset: int) -> Optional[int]:
    end = offset + len(page.decisions)
    return end if page.decisions and end < page.total else None


def _ndjson_decisions(r: Any) -> list[Decision]:
    return [from_json(Decision, json.loads(line)) for line in r.text.splitlines() if line.strip()]


def _batch_call(model_id: str, exps: list[dict[str, Any]]) -> _Call[list[UpdateResult]]:
    if not 1 <= len(exps) <= MAX_BATCH:
        raise ValueError(f"a batch holds 1 to {MAX_BATCH} experiences, got {len(exps)}")
    return _Call("POST", "/update/batch",
                 lambda r: [from_json(UpdateResult, x) for x in r.json()["results"]],
                 json={"model_id": _id(model_id), "experiences": exps}, idempotent=False)


def _update_many_plan(model_id: str, cols: dict[str, Any],
                      batch_size: int) -> _Plan[np.ndarray[Any, np.dtype[np.float64]]]:
    td: list[float] = []
    for start in range(0, len(cols["state"]), batch_size):
        exps = _experience_dicts(cols, start, start + batch_size)
        call = _Call("POST", "/update/batch", lambda r: [x["td_error"] for x in r.json()["results"]],
                     json={"model_id": _id(model_id), "experiences": exps}, idempotent=False)
        try:
            td.extend((yield call))
        except QlearnError as e:
            e.applied = start  # type: ignore[attr-defined]
            raise
    return np.asarray(td, dtype=np.float64)


def _status_call(model_id: str, offset: int, limit: int) -> _Call[Status]:
    if not isinstance(offset, int) or offset < 0:
        raise ValueError("offset must be an int >= 0")
    if not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be an int in 1..={MAX_PAGE}")
    return _Call("GET", f"/status/{_id(model_id)}", _json(Status),
                 params={"offset": offset, "limit": limit})


def _next_offset(status: Status) -> Optional[int]:
    """Where the next page starts, or None after the last. Rows keep their
    position (new states are appended), so paging sees every row once."""
    page = status.q_table
    end = page.offset + len(page.rows)
    return end if page.rows and end < page.total else None


def _table_plan(model_id: str) -> _Plan[tuple[ModelInfo, list[Any], np.ndarray[Any, Any]]]:
    """The whole Q-table: the model, its states and the Q matrix."""
    offset: Optional[int] = 0
    states: list[Any] = []
    rows: list[list[float]] = []
    model = None
    while offset is not None:
        status: Status = yield _status_call(model_id, offset, MAX_PAGE)
        model = status.model
        states.extend(r.state for r in status.q_table.rows)
        rows.extend(r.q_values for r in status.q_table.rows)
        offset = _next_offset(status)
    assert model is not None
    q = np.asarray(rows, dtype=np.float64).reshape(len(rows), model.n_actions)
    return model, states, q
