"""The client of the hosted qlearn service: :class:`Client` (blocking) and
:class:`AsyncClient` (asyncio), with the same methods, over httpx.

httpx is an optional dependency (``pip install 'qlearn[client]'``):
``import qlearn`` works without it, and creating a client without it raises
an ImportError naming the extra.

Every operation is written once, as a description of the HTTP call(s) it
makes (:class:`_Call`, or a generator of calls for operations that take
several); the two clients differ only in how they send a call. Errors are
:mod:`qlearn.errors` exceptions; a 429 ``rate_limited`` or a 503 is retried
after its ``Retry-After`` for calls that are safe to repeat (reads,
deletes, model edits, episode ends, and a ``predict``/``reward`` that carries a
client ``decision_id``/``reward_id``, which the server deduplicates), never for
``update`` or a ``predict``/``reward`` without such a key, and not when the
wait exceeds ``max_retry_wait``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as _dt
import json
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any, Optional, TypeVar, Union

import numpy as np

from ._calls import _Call, _code, _endpoint, _error, _json, _nothing, _Op, _Plan, _require_httpx, _retry_after
from ._convert import (
    _EXPERIENCE_KEYS,
    _actions,
    _experience,
    _experience_columns,
    _experience_dicts,
    _id,
    _params,
    _state,
)
from ._plans import (
    MAX_BATCH,
    MAX_PAGE,
    _batch_call,
    _decision_filter,
    _decisions_call,
    _episodes_call,
    _key,
    _ndjson_decisions,
    _next_decision_offset,
    _next_offset,
    _reward_item,
    _reward_results,
    _status_call,
    _update_many_plan,
)
from .remote import RemoteModel
from ._qlearn import QLearner
from .analysis import frame
from .errors import ConnectionFailed, QlearnError
from .events import AsyncEventStream, EventStream
from .types import (
    ApiKey,
    ApiKeyInfo,
    Dashboard,
    Decision,
    DecisionPage,
    DecisionsSetting,
    EpisodeEnd,
    EpisodePage,
    Evaluation,
    Health,
    ModelInfo,
    Prediction,
    RateLimit,
    Registration,
    RewardError,
    RewardReceipt,
    State,
    Status,
    Token,
    UpdateResult,
    User,
    from_json,
    state_from_json,
)

T = TypeVar("T")



# ---- the operations, once for both clients -----------------------------------------


class _Api:
    """Everything but the transport."""

    base_url: str
    timeout: Any
    max_retries: int
    max_retry_wait: float
    _secret: Optional[str]
    last_rate_limit: Optional[RateLimit]

    #: The httpx pool class of the client ("Client" or "AsyncClient").
    _POOL = ""

    def __init__(self, base_url: str, *, api_key: Optional[str] = None, token: Optional[str] = None,
                 timeout: Any = 30.0, max_retries: int = 3, max_retry_wait: float = 60.0,
                 transport: Any = None) -> None:
        hx = _require_httpx()
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValueError("base_url must be an http:// or https:// URL string")
        if api_key is not None and token is not None:
            raise ValueError("give api_key or token, not both")
        secret = api_key if api_key is not None else token
        if secret is not None and (not isinstance(secret, str) or not secret):
            raise TypeError("api_key/token must be a non-empty str")
        if not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError("max_retries must be an int >= 0")
        if not max_retry_wait >= 0:
            raise ValueError("max_retry_wait must be >= 0 seconds")
        self.base_url = base_url.rstrip("/")
        self._secret = secret
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_retry_wait = float(max_retry_wait)
        self.last_rate_limit = None
        self._httpx = hx
        self._http = getattr(hx, self._POOL)(base_url=self.base_url, timeout=timeout, transport=transport)

    def __repr__(self) -> str:  # never the credentials
        return f"{type(self).__name__}({self.base_url!r}, authenticated={self._secret is not None})"

    def _execute(self, op: _Op[Any]) -> Any:
        raise NotImplementedError

    def _request_args(self, call: _Call[Any]) -> dict[str, Any]:
        return {"params": call.params, "json": call.json, "content": call.content,
                "headers": self._headers(call)}

    def _headers(self, call: _Call[Any]) -> dict[str, str]:
        h = {}
        if call.auth and self._secret is not None:
            h["Authorization"] = f"Bearer {self._secret}"
        if call.content_type:
            h["Content-Type"] = call.content_type
        return h

    def _retry_delay(self, call: _Call[Any], r: Any, attempt: int) -> Optional[float]:
        """Seconds to wait before sending ``call`` again, or None: answer it."""
        if not call.idempotent or attempt >= self.max_retries:
            return None
        if not (r.status_code == 503 or (r.status_code == 429 and _code(r) == "rate_limited")):
            return None
        wait = _retry_after(r)
        wait = 1.0 if wait is None else wait
        return wait if wait <= self.max_retry_wait else None

    def _finish(self, call: _Call[T], r: Any) -> T:
        if "ratelimit" in r.headers:
            self.last_rate_limit = RateLimit.from_headers(r.headers.get("ratelimit-policy", ""),
                                                          r.headers["ratelimit"])
        if r.status_code >= 400:
            raise _error(r)
        result = call.parse(r)
        if call.then is not None:
            call.then(result)
        return result

    def _set_token(self, result: Union[Token, Registration]) -> None:
        self._secret = result.access_token

    # -- accounts

    @_endpoint
    def register(self, email: str, password: str) -> _Call[Registration]:
        """Creates an account (``POST /register``) and uses its token from now on."""
        return _Call("POST", "/register", _json(Registration), json={"email": email, "password": password},
                     idempotent=False, auth=False, then=self._set_token)

    @_endpoint
    def login(self, email: str, password: str) -> _Call[Token]:
        """Logs in (``POST /login``) and uses the token from now on."""
        return _Call("POST", "/login", _json(Token), json={"email": email, "password": password},
                     idempotent=False, auth=False, then=self._set_token)

    @_endpoint
    def me(self) -> _Call[User]:
        """The account (``GET /me``)."""
        return _Call("GET", "/me", _json(User))

    @_endpoint
    def change_password(self, current_password: str, new_password: str) -> _Call[Token]:
        """``POST /me/password``: every earlier token is revoked; the client
        uses the new one."""
        return _Call("POST", "/me/password", _json(Token),
                     json={"current_password": current_password, "new_password": new_password},
                     idempotent=False, then=self._set_token)

    @_endpoint
    def health(self) -> _Call[Health]:
        """``GET /healthz``."""
        return _Call("GET", "/healthz", _json(Health), auth=False)

    # -- API keys

    @_endpoint
    def create_api_key(self, name: str) -> _Call[ApiKey]:
        """A new API key (``POST /api-keys``); ``key`` is shown only here."""
        return _Call("POST", "/api-keys", _json(ApiKey), json={"name": name}, idempotent=False)

    @_endpoint
    def list_api_keys(self) -> _Call[list[ApiKeyInfo]]:
        """``GET /api-keys``."""
        return _Call("GET", "/api-keys", lambda r: [from_json(ApiKeyInfo, k) for k in r.json()])

    @_endpoint
    def delete_api_key(self, key_id: str) -> _Call[None]:
        """``DELETE /api-keys/{id}``: the key stops working."""
        return _Call("DELETE", f"/api-keys/{_id(key_id)}", _nothing)

    @_endpoint
    def dashboard(self) -> _Call[Dashboard]:
        """The dashboard's data: user, tier limits, this month's usage, models."""
        return _Call("GET", "/dashboard", _json(Dashboard))

    # -- models

    @_endpoint
    def create_model(self, name: str, n_actions: int, **params: Any) -> _Call[ModelInfo]:
        """``POST /models``. ``params``: any engine field (learning_rate,
        discount_factor, epsilon, epsilon_decay, min_epsilon, initial_q,
        algorithm, exploration, temperature, seed, action_names, state_bins),
        named as for :class:`qlearn.QLearner`."""
        body = {"name": name, "n_actions": n_actions, **_params(params, drop_none=True)}
        return _Call("POST", "/models", _json(ModelInfo), json=body, idempotent=False)

    @_endpoint
    def list_models(self) -> _Call[list[ModelInfo]]:
        """``GET /models``."""
        return _Call("GET", "/models", lambda r: [from_json(ModelInfo, m) for m in r.json()])

    @_endpoint
    def get_model(self, model_id: str) -> _Call[ModelInfo]:
        """``GET /models/{id}``."""
        return _Call("GET", f"/models/{_id(model_id)}", _json(ModelInfo))

    @_endpoint
    def patch_model(self, model_id: str, **changes: Any) -> _Call[ModelInfo]:
        """``PATCH /models/{id}``: ``name`` and hyperparameters (None clears
        ``action_names``). ``decisions``: a :class:`DecisionsSetting` or a dict
        of its keys turns decision logging on (``{}``: the defaults), None
        turns it off and discards the model's decision log."""
        body = _params(changes, drop_none=False, extra=("name", "n_actions", "decisions"))
        if isinstance(body.get("decisions"), DecisionsSetting):
            body["decisions"] = {k: v for k, v in dataclasses.asdict(body["decisions"]).items()
                                 if v is not None or k == "default_reward"}
        return _Call("PATCH", f"/models/{_id(model_id)}", _json(ModelInfo), json=body)

    @_endpoint
    def delete_model(self, model_id: str) -> _Call[None]:
        """``DELETE /models/{id}``."""
        return _Call("DELETE", f"/models/{_id(model_id)}", _nothing)

    # -- the engine

    @_endpoint
    def predict(self, model_id: str, state: Any, explore: bool = True, allowed_actions: Any = None,
                decision_id: Optional[str] = None, episode_id: Optional[str] = None,
                baseline_action: Optional[int] = None) -> _Call[Prediction]:
        """``POST /predict`` (metered). On a model that logs decisions the
        answer also has ``decision_id``, ``probability`` and (with an
        ``episode_id``) ``step``. A client ``decision_id`` (1-128 bytes) is
        an idempotency key: such a call is retried after a 429
        ``rate_limited``/503 (the server answers a retry with the logged
        decision, metered once); without one, predict is never retried.
        ``baseline_action`` (a model that logs decisions only): the action
        your existing rule would have taken, recorded with the decision for
        an evaluation's ``baseline`` policy."""
        body: dict[str, Any] = {"model_id": _id(model_id), "state": _state(state), "explore": bool(explore)}
        if allowed_actions is not None:
            body["allowed_actions"] = _actions(allowed_actions, "allowed_actions")
        if decision_id is not None:
            body["decision_id"] = _key(decision_id, "decision_id")
        if episode_id is not None:
            body["episode_id"] = _key(episode_id, "episode_id")
        if baseline_action is not None:
            if isinstance(baseline_action, (bool, float)) or not isinstance(baseline_action, (int, np.integer)):
                raise TypeError(f"baseline_action must be an int, got {type(baseline_action).__name__}")
            body["baseline_action"] = int(baseline_action)
        return _Call("POST", "/predict", _json(Prediction), json=body, idempotent=decision_id is not None)

    @_endpoint
    def action_probabilities(self, model_id: str, state: Any, allowed_actions: Any = None,
                             explore: bool = True) -> _Call[list[float]]:
        """``POST /predict/probabilities`` (metered like a predict; not
        retried): the probability with which predict would choose each
        action, the numbers :meth:`QLearner.action_probabilities` gives."""
        body: dict[str, Any] = {"model_id": _id(model_id), "state": _state(state), "explore": bool(explore)}
        if allowed_actions is not None:
            body["allowed_actions"] = _actions(allowed_actions, "allowed_actions")
        return _Call("POST", "/predict/probabilities", lambda r: [float(x) for x in r.json()["probabilities"]],
                     json=body, idempotent=False)

    @_endpoint
    def update(self, model_id: str, state: Any, action: int, reward: float, next_state: Any,
               done: bool = False, truncated: bool = False, next_action: Optional[int] = None,
               next_allowed_actions: Any = None) -> _Call[UpdateResult]:
        """``POST /update`` (metered; not retried)."""
        body = {"model_id": _id(model_id),
                **_experience(state, action, reward, next_state, done, truncated, next_action,
                              next_allowed_actions)}
        return _Call("POST", "/update", _json(UpdateResult), json=body, idempotent=False)

    @_endpoint
    def update_batch(self, model_id: str, experiences: Sequence[dict[str, Any]]) -> _Call[list[UpdateResult]]:
        """``POST /update/batch`` of up to 1,000 experience dicts (the keys of
        :meth:`update`), all or nothing."""
        if not isinstance(experiences, Sequence) or isinstance(experiences, (str, bytes)):
            raise TypeError("experiences must be a sequence of dicts")
        exps = []
        for i, e in enumerate(experiences):
            if not isinstance(e, Mapping):
                raise TypeError(f"experiences[{i}] must be a dict, got {type(e).__name__}")
            missing = [k for k in ("state", "action", "reward", "next_state") if k not in e]
            unknown = sorted(set(e) - set(_EXPERIENCE_KEYS))
            if missing or unknown:
                raise ValueError(f"experiences[{i}]: " + "; ".join(
                    ([f"missing {', '.join(missing)}"] if missing else [])
                    + ([f"unknown {', '.join(unknown)}"] if unknown else [])))
            exps.append(_experience(e["state"], e["action"], e["reward"], e["next_state"],
                                    e.get("done", False), e.get("truncated", False), e.get("next_action"),
                                    e.get("next_allowed_actions")))
        return _batch_call(model_id, exps)

    @_endpoint
    def update_many(self, model_id: str, states: Any, actions: Any, rewards: Any, next_states: Any,
                    dones: Any, truncateds: Any = None, next_actions: Any = None,
                    batch_size: int = MAX_BATCH) -> _Plan[np.ndarray[Any, np.dtype[np.float64]]]:
        """Learns from numpy columns, like :meth:`qlearn.QLearner.update_many`,
        in ``POST /update/batch`` calls of ``batch_size`` (<= 1,000)
        experiences. Returns the TD errors. Each batch is all or nothing; if
        one fails, the batches before it stay applied and the exception's
        ``applied`` attribute says how many experiences that was."""
        if not isinstance(batch_size, int) or not 1 <= batch_size <= MAX_BATCH:
            raise ValueError(f"batch_size must be an int in 1..={MAX_BATCH}")
        cols = _experience_columns(states, actions, rewards, next_states, dones, truncateds, next_actions)
        return _update_many_plan(model_id, cols, batch_size)

    # -- decisions and delayed rewards

    @_endpoint
    def reward(self, model_id: str, decision_id: str, value: float, reward_id: Optional[str] = None,
               final: bool = False) -> _Call[RewardReceipt]:
        """``POST /rewards``: a (possibly delayed) reward of a logged decision;
        ``final=True`` closes its window at once. With a ``reward_id`` the
        call is idempotent (a repeat with the same value answers
        ``duplicate``) and is retried after a 429 ``rate_limited``/503;
        without one it is never retried. A ``reward_id`` reused with another
        value raises :class:`qlearn.Conflict`."""
        body = {"model_id": _id(model_id), **_reward_item(decision_id, value, reward_id, final)}
        return _Call("POST", "/rewards", _json(RewardReceipt), json=body, idempotent=reward_id is not None)

    @_endpoint
    def rewards(self, model_id: str,
                items: Sequence[Mapping[str, Any]]) -> _Call[list[Union[RewardReceipt, RewardError]]]:
        """``POST /rewards/batch`` of 1 to 1,000 dicts with the keys of
        :meth:`reward` (``decision_id``, ``value``, ``reward_id``, ``final``).
        Returns one result per item, in order: a :class:`RewardReceipt`, or a
        :class:`RewardError` for an item that failed alone. Retried after a
        429 ``rate_limited``/503 only when every item has a ``reward_id``."""
        if not isinstance(items, Sequence) or isinstance(items, (str, bytes)):
            raise TypeError("items must be a sequence of dicts")
        if not 1 <= len(items) <= MAX_BATCH:
            raise ValueError(f"a batch holds 1 to {MAX_BATCH} rewards, got {len(items)}")
        out = []
        for i, item in enumerate(items):
            if not isinstance(item, Mapping):
                raise TypeError(f"items[{i}] must be a dict, got {type(item).__name__}")
            unknown = sorted(set(item) - {"decision_id", "value", "reward_id", "final"})
            missing = [k for k in ("decision_id", "value") if k not in item]
            if unknown or missing:
                raise ValueError(f"items[{i}]: " + "; ".join(
                    ([f"missing {', '.join(missing)}"] if missing else [])
                    + ([f"unknown {', '.join(unknown)}"] if unknown else [])))
            out.append(_reward_item(item["decision_id"], item["value"], item.get("reward_id"),
                                    item.get("final", False)))
        return _Call("POST", "/rewards/batch", _reward_results,
                     json={"model_id": _id(model_id), "rewards": out},
                     idempotent=all("reward_id" in r for r in out))

    @_endpoint
    def end_episode(self, model_id: str, episode_id: str, outcome: str, next_state: Any = None,
                    next_allowed_actions: Any = None) -> _Call[EpisodeEnd]:
        """``POST /episodes/end``: ``outcome`` ``"terminated"`` (no bootstrap)
        or ``"truncated"`` (needs ``next_state``, bootstraps from it). Ending
        again the same way has no effect (so the call is retried after a 429
        ``rate_limited``/503); another way raises :class:`qlearn.Conflict`."""
        if outcome not in ("terminated", "truncated"):
            raise ValueError("outcome must be 'terminated' or 'truncated'")
        body: dict[str, Any] = {"model_id": _id(model_id), "episode_id": _key(episode_id, "episode_id"),
                                "outcome": outcome}
        if next_state is not None:
            body["next_state"] = _state(next_state)
        if next_allowed_actions is not None:
            body["next_allowed_actions"] = _actions(next_allowed_actions, "next_allowed_actions")
        return _Call("POST", "/episodes/end", _json(EpisodeEnd), json=body)

    @_endpoint
    def decisions(self, model_id: str, status: Optional[str] = None, since: Any = None, until: Any = None,
                  offset: int = 0, limit: int = 100) -> _Call[DecisionPage]:
        """``GET /models/{id}/decisions``: a page of the decision log, oldest
        first. ``status``: ``open``, ``closed``, ``applied`` or ``expired``;
        ``since`` (included) / ``until`` (excluded): Unix seconds or aware
        datetimes; ``limit`` <= 1,000. See :meth:`iter_decisions` for all pages."""
        return _decisions_call(model_id, status, since, until, offset, limit)

    @_endpoint
    def episodes(self, model_id: str, status: Optional[str] = None, after: Optional[str] = None,
                 limit: int = 100) -> _Call[EpisodePage]:
        """``GET /models/{id}/episodes``: a page of the model's episodes in id
        order, with their steps and return so far; ``status`` ``"open"`` or
        ``"ended"``; pass the page's ``next_after`` as ``after`` for the next
        page (keyset paging); ``limit`` <= 1,000."""
        return _episodes_call(model_id, status, after, limit)

    @_endpoint
    def export_decisions(self, model_id: str, status: Optional[str] = None, since: Any = None,
                         until: Any = None) -> _Call[list[Decision]]:
        """``GET /models/{id}/decisions/export`` (NDJSON, the same filters):
        every matching decision, oldest first, as :class:`Decision` records
        (``dataclasses.asdict`` gives the dicts)."""
        return _Call("GET", f"/models/{_id(model_id)}/decisions/export", _ndjson_decisions,
                     params=_decision_filter(status, since, until))

    # -- offline evaluations (jobs)

    @_endpoint
    def create_evaluation(self, model_id: str, policies: Sequence[Union[str, Mapping[str, Any]]],
                          **options: Any) -> _Call[Evaluation]:
        """``POST /models/{id}/evaluations``: queues an offline evaluation of
        the model's decision log. ``policies``: names (``"greedy"``,
        ``"exploring"``, ``"uniform"``, ``"logged"``, ``"baseline"``) or dicts
        such as ``{"kind": "candidate", "name": "lr", "config": {"learning_rate": 0.05}}``;
        ``options``: ``since``/``until`` (Unix ms), ``mode``, ``direct``,
        ``confidence``, ``replicates``, ``seed``, ``reward_range``,
        ``min_ess``, ``min_coverage``, ``discount``. Over the plan's limits it
        raises :class:`qlearn.TooManyRequests` (``evaluations_per_day_reached``
        or ``evaluations_at_once_reached``). Never retried."""
        body = {"policies": [{"kind": p} if isinstance(p, str) else dict(p) for p in policies], **options}
        return _Call("POST", f"/models/{_id(model_id)}/evaluations", _json(Evaluation), json=body,
                     idempotent=False)

    @_endpoint
    def get_evaluation(self, model_id: str, evaluation_id: str) -> _Call[Evaluation]:
        """``GET /models/{id}/evaluations/{eid}``: the job, its progress and result."""
        return _Call("GET", f"/models/{_id(model_id)}/evaluations/{_id(evaluation_id)}", _json(Evaluation))

    @_endpoint
    def list_evaluations(self, model_id: str, limit: int = 20,
                         before: Optional[str] = None) -> _Call[list[Evaluation]]:
        """``GET /models/{id}/evaluations``: jobs newest first; ``before``: the
        last id of the previous page."""
        params: dict[str, Any] = {"limit": limit}
        if before is not None:
            params["before"] = before
        return _Call("GET", f"/models/{_id(model_id)}/evaluations",
                     lambda r: [from_json(Evaluation, j) for j in r.json()["evaluations"]], params=params)

    @_endpoint
    def cancel_evaluation(self, model_id: str, evaluation_id: str) -> _Call[None]:
        """``DELETE /models/{id}/evaluations/{eid}``: cancels a queued or
        running job, or deletes a finished one's record."""
        return _Call("DELETE", f"/models/{_id(model_id)}/evaluations/{_id(evaluation_id)}", _nothing)

    @_endpoint
    def status(self, model_id: str, offset: int = 0, limit: int = 100) -> _Call[Status]:
        """``GET /status/{id}``: the model, its statistics and a page of its Q-table."""
        return _status_call(model_id, offset, limit)

    @_endpoint
    def export_bytes(self, model_id: str) -> _Call[bytes]:
        """``GET /models/{id}/export``: the model in the shared binary format."""
        return _Call("GET", f"/models/{_id(model_id)}/export", lambda r: r.content)

    @_endpoint
    def export_model(self, model_id: str) -> _Call[QLearner]:
        """Downloads a hosted model as a local :class:`qlearn.QLearner`
        (identical Q-values, hyperparameters, counters and random state)."""
        return _Call("GET", f"/models/{_id(model_id)}/export", lambda r: QLearner.from_bytes(r.content))

    @_endpoint
    def import_model(self, model: Union[QLearner, bytes, bytearray, memoryview],
                     name: Optional[str] = None) -> _Call[ModelInfo]:
        """Uploads a local :class:`qlearn.QLearner` (or its ``to_bytes()``)
        as a new hosted model (``POST /models/import``)."""
        if isinstance(model, QLearner):
            data = model.to_bytes()
        elif isinstance(model, (bytes, bytearray, memoryview)):
            data = bytes(model)
        else:
            raise TypeError(f"expected a QLearner or bytes, got {type(model).__name__}")
        return _Call("POST", "/models/import", _json(ModelInfo), content=data,
                     content_type="application/octet-stream",
                     params=None if name is None else {"name": name}, idempotent=False)

    def model(self, model_id: str) -> RemoteModel:
        """A handle on a hosted model with :class:`qlearn.QLearner`'s names."""
        return RemoteModel(self, model_id)


# ---- the two clients --------------------------------------------------------------------

_DOC = """
    Args:
        base_url: the service, e.g. ``"https://qlearn.example.com"``.
        api_key: an API key (``create_api_key``), or
        token: a JWT (``login``/``register`` set one themselves).
        timeout: seconds (or an ``httpx.Timeout``) for each request.
        max_retries: retries of a 429 ``rate_limited`` / 503 answer to a
            call that is safe to repeat (0: none).
        max_retry_wait: longest ``Retry-After`` (seconds) waited for; a
            longer one raises at once.
        transport: an httpx transport (tests, proxies).

    ``last_rate_limit`` holds the ``RateLimit`` headers of the last answer
    that had them. One connection pool per client; close it with
    ``close()`` or a ``with`` block.
"""


class Client(_Api):
    __doc__ = "A blocking client of the qlearn service.\n" + _DOC

    _POOL = "Client"
    _http: Any  # httpx.Client

    def _send(self, call: _Call[T]) -> T:
        attempt = 0
        while True:
            try:
                r = self._http.request(call.method, call.path, **self._request_args(call))
            except self._httpx.TransportError as e:
                raise ConnectionFailed(f"{call.method} {call.path}: {type(e).__name__}: {e}") from e
            delay = self._retry_delay(call, r, attempt)
            if delay is None:
                return self._finish(call, r)
            attempt += 1
            time.sleep(delay)

    def _execute(self, op: _Op[T]) -> T:
        if isinstance(op, _Call):
            return self._send(op)
        try:
            step = next(op)
            while True:
                try:
                    result = self._send(step)
                except QlearnError as e:
                    step = op.throw(e)
                else:
                    step = op.send(result)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    def iter_q_table(self, model_id: str, page_size: int = MAX_PAGE) -> Iterator[tuple[State, list[float]]]:
        """Every ``(state, q_values)`` row of a hosted model, one
        ``GET /status`` page of ``page_size`` rows at a time."""
        offset: Optional[int] = 0
        while offset is not None:
            status = self._send(_status_call(model_id, offset, page_size))
            yield from ((row.state, row.q_values) for row in status.q_table.rows)
            offset = _next_offset(status)

    def iter_decisions(self, model_id: str, status: Optional[str] = None, since: Any = None,
                       until: Any = None, page_size: int = MAX_PAGE) -> Iterator[Decision]:
        """Every logged decision matching the filter (see :meth:`decisions`),
        oldest first, one page of ``page_size`` at a time. New decisions are
        appended, but with a ``status`` filter a decision that changes status
        while paging can shift the pages: filter by ``until`` for a stable
        listing, or use :meth:`export_decisions`."""
        offset: Optional[int] = 0
        while offset is not None:
            page = self._send(_decisions_call(model_id, status, since, until, offset, page_size))
            yield from page.decisions
            offset = _next_decision_offset(page, offset)

    def wait_evaluation(self, model_id: str, evaluation_id: str, timeout: float = 300.0,
                        interval: float = 0.5) -> Evaluation:
        """Polls :meth:`get_evaluation` every ``interval`` seconds until the
        job finished; raises TimeoutError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            job = self._send(_Api.get_evaluation.build(self, model_id, evaluation_id))
            if job.finished:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"evaluation {evaluation_id} still {job.status} after {timeout} s")
            time.sleep(interval)

    def events(self, model_id: str) -> EventStream:
        """The model's live updates (server-sent events); see :class:`EventStream`."""
        return EventStream(self, model_id)

    def close(self) -> None:
        """Closes the connection pool."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class AsyncClient(_Api):
    __doc__ = "An asyncio client of the qlearn service: :class:`Client`'s methods, awaited.\n" + _DOC

    _POOL = "AsyncClient"
    _http: Any  # httpx.AsyncClient

    async def _send(self, call: _Call[T]) -> T:
        attempt = 0
        while True:
            try:
                r = await self._http.request(call.method, call.path, **self._request_args(call))
            except self._httpx.TransportError as e:
                raise ConnectionFailed(f"{call.method} {call.path}: {type(e).__name__}: {e}") from e
            delay = self._retry_delay(call, r, attempt)
            if delay is None:
                return self._finish(call, r)
            attempt += 1
            await asyncio.sleep(delay)

    async def _execute(self, op: _Op[T]) -> T:  # type: ignore[override]
        if isinstance(op, _Call):
            return await self._send(op)
        try:
            step = next(op)
            while True:
                try:
                    result = await self._send(step)
                except QlearnError as e:
                    step = op.throw(e)
                else:
                    step = op.send(result)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    async def iter_q_table(self, model_id: str,
                           page_size: int = MAX_PAGE) -> AsyncIterator[tuple[State, list[float]]]:
        """:meth:`Client.iter_q_table`, as an async iterator."""
        offset: Optional[int] = 0
        while offset is not None:
            status = await self._send(_status_call(model_id, offset, page_size))
            for row in status.q_table.rows:
                yield row.state, row.q_values
            offset = _next_offset(status)

    async def iter_decisions(self, model_id: str, status: Optional[str] = None, since: Any = None,
                             until: Any = None, page_size: int = MAX_PAGE) -> AsyncIterator[Decision]:
        """:meth:`Client.iter_decisions`, as an async iterator."""
        offset: Optional[int] = 0
        while offset is not None:
            page = await self._send(_decisions_call(model_id, status, since, until, offset, page_size))
            for d in page.decisions:
                yield d
            offset = _next_decision_offset(page, offset)

    async def wait_evaluation(self, model_id: str, evaluation_id: str, timeout: float = 300.0,
                              interval: float = 0.5) -> Evaluation:
        """:meth:`Client.wait_evaluation`, awaited."""
        deadline = time.monotonic() + timeout
        while True:
            job = await self._send(_Api.get_evaluation.build(self, model_id, evaluation_id))
            if job.finished:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"evaluation {evaluation_id} still {job.status} after {timeout} s")
            await asyncio.sleep(interval)

    def events(self, model_id: str) -> AsyncEventStream:
        """The model's live updates; ``async with client.events(id) as s: async for e in s``."""
        return AsyncEventStream(self, model_id)

    async def close(self) -> None:
        """Closes the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


__all__ = ["AsyncClient", "AsyncEventStream", "Client", "EventStream", "RemoteModel", "state_from_json"]
