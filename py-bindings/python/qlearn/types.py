"""Typed results of :class:`qlearn.Client` and :class:`qlearn.AsyncClient`:
one frozen dataclass per JSON object of the service (docs/http-api.md).

Fields the server adds later are ignored, so an older client keeps working
against a newer server. Times stay RFC 3339 strings as the server sends
them (``created_at``); :attr:`Usage.resets_at` and
:attr:`qlearn.QuotaExceeded.resets_at` are parsed to ``datetime``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Optional, Union

#: A state as the service returns it: an int, a str, or a tuple of numbers
#: (JSON arrays become tuples, so states are hashable dict keys).
State = Union[int, str, "tuple[float, ...]"]


def state_from_json(value: Any) -> State:
    """A state of a server response in the client's form (arrays as tuples)."""
    return tuple(value) if isinstance(value, list) else value


def parse_time(text: str) -> _dt.datetime:
    """An RFC 3339 UTC time of the server (``2026-12-01T00:00:00Z``)."""
    return _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


_T = typing.TypeVar("_T")


def from_json(cls: type[_T], data: Any) -> _T:
    """Builds dataclass ``cls`` from a decoded JSON object, converting
    nested dataclasses and lists of them by the field annotations and
    ignoring unknown keys."""
    if not isinstance(data, dict):
        raise TypeError(f"expected a JSON object for {cls.__name__}, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in data:
            kwargs[f.name] = _convert(hints[f.name], data[f.name])
    return cls(**kwargs)


def _convert(tp: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(tp)
    if origin in (Union, getattr(types, "UnionType", Union)):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _convert(inner[0], value) if len(inner) == 1 else value
    if origin is list:
        (item,) = typing.get_args(tp)
        return [_convert(item, v) for v in value]
    if dataclasses.is_dataclass(tp):
        return from_json(tp, value)  # type: ignore[arg-type]
    if tp is float and isinstance(value, int):
        return float(value)
    return value


@dataclass(frozen=True)
class User:
    """An account (``GET /me``)."""

    id: str
    email: str
    tier: str
    role: str
    created_at: Optional[str] = None


@dataclass(frozen=True)
class Token:
    """A JWT (``POST /login``, ``POST /me/password``). Its repr hides it."""

    access_token: str = field(repr=False)
    token_type: str = "bearer"
    expires_in: int = 0


@dataclass(frozen=True)
class Registration:
    """``POST /register``: the token, the user and the default model's id."""

    access_token: str = field(repr=False)
    token_type: str
    expires_in: int
    user: User
    default_model_id: str


@dataclass(frozen=True)
class ModelStats:
    """A model's counters (the same as :class:`qlearn.Stats` in-process)."""

    predictions: int
    updates: int
    episodes: int
    states: int
    epsilon: float
    mean_reward: float
    recent_returns: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class StateBin:
    """One dimension of ``state_bins``."""

    low: float
    high: float
    bins: int


@dataclass(frozen=True)
class DecisionsSetting:
    """A model's ``decisions`` setting (docs/http-api.md, "Decisions and
    delayed rewards"); pass one (or a dict of these keys) as
    ``patch_model(id, decisions=...)``, None to turn logging off."""

    reward_wait_seconds: int = 600
    default_reward: Optional[float] = None
    aggregation: str = "sum"
    retention_days: Optional[int] = None


@dataclass(frozen=True)
class ModelInfo:
    """A hosted model: its hyperparameters and statistics."""

    id: str
    name: str
    n_actions: int
    action_names: Optional[list[str]]
    learning_rate: float
    discount_factor: float
    epsilon: float
    epsilon_decay: float
    min_epsilon: float
    initial_q: float
    algorithm: str
    exploration: str
    temperature: float
    seed: Optional[int]
    state_bins: Optional[list[StateBin]]
    created_at: str
    updated_at: str
    stats: ModelStats
    #: The decision-logging setting (None: the model logs no decisions).
    decisions: Optional[DecisionsSetting] = None


@dataclass(frozen=True)
class Prediction:
    """``POST /predict``."""

    action: int
    action_name: Optional[str]
    q_values: list[float]
    explored: bool
    epsilon: float
    #: On a model that logs decisions: the decision's id, for :meth:`qlearn.Client.reward`.
    decision_id: Optional[str] = None
    #: On a model that logs decisions: the probability with which the
    #: behaviour policy chose ``action``.
    probability: Optional[float] = None
    #: With an ``episode_id``: the decision's step in the episode, from 0.
    step: Optional[int] = None


@dataclass(frozen=True)
class UpdateResult:
    """``POST /update`` (and each item of a batch)."""

    q_value: float
    td_error: float
    epsilon: float


@dataclass(frozen=True)
class QRow:
    """One row of the Q-table."""

    state: Any
    q_values: list[float]

    def __post_init__(self) -> None:
        object.__setattr__(self, "state", state_from_json(self.state))


@dataclass(frozen=True)
class QTablePage:
    """A page of the Q-table (``GET /status/{id}?offset=&limit=``)."""

    total: int
    offset: int
    limit: int
    rows: list[QRow]


@dataclass(frozen=True)
class Status:
    """``GET /status/{id}``: the model, its statistics, a page of its table."""

    model: ModelInfo
    stats: ModelStats
    q_table: QTablePage


@dataclass(frozen=True)
class ApiKey:
    """A new API key (``POST /api-keys``): ``key`` is shown only once; the
    repr hides it."""

    id: str
    name: str
    key: str = field(repr=False)
    prefix: str = ""
    created_at: str = ""


@dataclass(frozen=True)
class ApiKeyInfo:
    """A listed API key (``GET /api-keys``), without its secret."""

    id: str
    name: str
    prefix: str
    created_at: str
    last_used_at: Optional[str] = None


@dataclass(frozen=True)
class Limits:
    """The limits of a tier (None: unlimited)."""

    tier: str
    monthly_calls: Optional[int]
    max_models: Optional[int]
    rate_per_second: int
    burst: int


@dataclass(frozen=True)
class DayUsage:
    """Metered calls of one day."""

    date: str
    calls: int


@dataclass(frozen=True)
class Usage:
    """Metered calls this month."""

    month: str
    calls: int
    limit: Optional[int]
    remaining: Optional[int]
    resets_at: str
    per_day: list[DayUsage]

    @property
    def resets_at_datetime(self) -> _dt.datetime:
        """``resets_at`` as an aware datetime (UTC)."""
        return parse_time(self.resets_at)


@dataclass(frozen=True)
class Dashboard:
    """``GET /dashboard``: the user, the tier's limits, the usage, the models."""

    user: User
    limits: Limits
    usage: Usage
    models: list[ModelInfo]


@dataclass(frozen=True)
class UpdateEvent:
    """``event: update`` of ``GET /models/{id}/events``: one applied update."""

    state: Any
    action: int
    q_values: list[float]
    q_value: float
    td_error: float
    epsilon: float
    updates: int
    episodes: int
    episode_return: Optional[float] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "state", state_from_json(self.state))


@dataclass(frozen=True)
class LaggedEvent:
    """``event: lagged``: the stream skipped ``missed`` updates and goes on."""

    missed: int


@dataclass(frozen=True)
class EndEvent:
    """``event: end``: the last frame of a stream whose credential expired or
    was revoked (``reason`` ``credential_revoked``). The stream iterator
    stops cleanly after it and keeps it as ``stream.end``."""

    reason: str
    message: str = ""


@dataclass(frozen=True)
class RewardReceipt:
    """What a reward did (``POST /rewards``, an item of ``/rewards/batch``).
    ``status``: ``open`` (counted, window open), ``closed`` (counted, window
    closed), ``applied`` (learned), ``late`` (after the window: recorded,
    not learned) or ``duplicate`` (a repeated ``reward_id``: no effect);
    ``reward`` the aggregate so far, ``rewards`` how many counted."""

    decision_id: str
    status: str
    reward: Optional[float]
    rewards: int
    closes_at: str


@dataclass(frozen=True)
class RewardError:
    """An item of ``POST /rewards/batch`` that failed alone: ``code``
    ``not_found``, ``conflict`` or ``invalid_field``."""

    decision_id: str
    code: str
    message: str


@dataclass(frozen=True)
class EpisodeEnd:
    """``POST /episodes/end``: transitions learned by this end (0 when the
    episode had already ended the same way)."""

    episode_id: str
    learned: int


@dataclass(frozen=True)
class EvaluationProgress:
    """How far an evaluation job read the decision log."""

    decisions_read: int
    decisions_total: int


@dataclass(frozen=True)
class Evaluation:
    """An offline evaluation job (``/models/{id}/evaluations``).
    ``status``: ``queued``, ``running``, ``done``, ``failed`` or
    ``cancelled``; ``request``: the request with its defaults; ``error``:
    ``{"code", "message"}`` when failed; ``result``: once done, the dict
    docs/http-api.md describes (``logged_reward``, and per policy its
    ``diagnostics`` and estimators' ``results``)."""

    id: str
    model_id: str
    status: str
    created_at: str
    request: dict[str, Any]
    progress: EvaluationProgress
    started_at: Optional[str] = None
    finished_at: Optional[str] = None
    error: Optional[dict[str, Any]] = None
    result: Optional[dict[str, Any]] = None

    @property
    def finished(self) -> bool:
        """Whether the job ended (done, failed or cancelled)."""
        return self.status not in ("queued", "running")


@dataclass(frozen=True)
class Decision:
    """A logged decision (``GET /models/{id}/decisions`` and its export).
    ``reward``: the one learned once closed, else the aggregate so far;
    ``status``: ``open``, ``closed``, ``applied`` or ``expired``."""

    decision_id: str
    episode_id: Optional[str]
    step: int
    time: str
    state: Any
    allowed_actions: Optional[list[int]]
    action: int
    probability: float
    reward: Optional[float]
    status: str
    rewards: int
    closes_at: str
    #: The order in which the model learned this decision's transition (1, 2,
    #: ...; ``None`` until it is applied): replaying the log in this order
    #: reproduces the model's Q-table.
    applied_seq: Optional[int] = None
    #: The baseline action recorded with the decision (``None``: none).
    baseline_action: Optional[int] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "state", state_from_json(self.state))

    @property
    def time_datetime(self) -> _dt.datetime:
        """``time`` as an aware datetime (UTC, whole seconds)."""
        return parse_time(self.time)


@dataclass(frozen=True)
class DecisionStats:
    """The counts of a model's decision log."""

    decisions: int
    rewards: int
    pending: int
    late: int
    defaulted: int
    applied: int


@dataclass(frozen=True)
class DecisionPage:
    """``GET /models/{id}/decisions``: ``total`` matching the filter, a page
    of them (oldest first) and the log's counts."""

    total: int
    decisions: list[Decision]
    stats: DecisionStats


@dataclass(frozen=True)
class Episode:
    """An episode of a model that logs decisions (``GET /models/{id}/episodes``).
    ``status``: ``open`` (going on) or ``ended``; ``outcome``:
    ``terminated`` or ``truncated`` (``None`` while open); ``learned_return``:
    the sum of the rewards learned from its steps so far (the wire's
    ``return``); ``started_at`` / ``last_decision_at``: its first and last
    decision's time (RFC 3339; ``None`` once past the retention)."""

    episode_id: str
    status: str
    steps: int
    learned_return: float
    outcome: Optional[str] = None
    started_at: Optional[str] = None
    last_decision_at: Optional[str] = None


@dataclass(frozen=True)
class EpisodePage:
    """A page of episodes in episode id order (bytewise); ``next_after``:
    the ``after`` of the next page (``None``: this is the last)."""

    episodes: list[Episode]
    next_after: Optional[str] = None


@dataclass(frozen=True)
class Health:
    """``GET /healthz``."""

    status: str
    storage: str


_ITEM = re.compile(r'\s*"?([A-Za-z0-9_.-]+)"?((?:\s*;\s*[A-Za-z0-9_*-]+=[^,;]*)*)')


def _parse_structured(header: str) -> dict[str, dict[str, Union[int, str]]]:
    """Parses an IETF structured-field list such as
    ``"burst";q=10;w=2, "monthly";q=100;w=2592000``."""
    out: dict[str, dict[str, Union[int, str]]] = {}
    for item in header.split(","):
        m = _ITEM.match(item)
        if not m:
            continue
        params: dict[str, Union[int, str]] = {}
        for p in m.group(2).split(";"):
            if "=" in p:
                k, v = p.strip().split("=", 1)
                v = v.strip().strip('"')
                params[k] = int(v) if v.lstrip("-").isdigit() else v
        out[m.group(1)] = params
    return out


@dataclass(frozen=True)
class RateLimit:
    """The ``RateLimit`` / ``RateLimit-Policy`` headers of the last
    authenticated response (draft-ietf-httpapi-ratelimit-headers).

    ``policies`` maps a policy name (``burst``, ``monthly``) to its ``q``
    (quota) and ``w`` (window, seconds); ``current`` maps it to ``r``
    (remaining) and ``t`` (seconds until reset)."""

    policy_header: str
    header: str
    policies: dict[str, dict[str, Union[int, str]]]
    current: dict[str, dict[str, Union[int, str]]]

    @classmethod
    def from_headers(cls, policy_header: str, header: str) -> RateLimit:
        return cls(policy_header, header, _parse_structured(policy_header), _parse_structured(header))

    def remaining(self, policy: str = "burst") -> Optional[int]:
        """Requests (``burst``) or calls (``monthly``) left, if the server said."""
        r = self.current.get(policy, {}).get("r")
        return r if isinstance(r, int) else None

    def reset_seconds(self, policy: str = "burst") -> Optional[int]:
        """Seconds until ``policy`` resets, if the server said."""
        t = self.current.get(policy, {}).get("t")
        return t if isinstance(t, int) else None
