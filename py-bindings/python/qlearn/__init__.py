"""qlearn: tabular Q-learning with a Rust engine, in-process.

The same engine, hyperparameters and model file format as the qlearn server:
a model trained here uploads to ``POST /models/import``, and a server's
``GET /models/{id}/export`` loads here with :meth:`QLearner.from_bytes`.

>>> import qlearn
>>> agent = qlearn.QLearner(n_actions=4, seed=0)
>>> a = agent.predict(0)
>>> td = agent.update(0, a, 1.0, 1)

See ``help(qlearn.QLearner)``. ``qlearn.Client`` / ``qlearn.AsyncClient``
are the clients of the hosted service (they need httpx:
``pip install 'qlearn[client]'``); see ``help(qlearn.Client)``.
"""

from ._qlearn import (
    FORMAT_VERSION,
    MAX_ACTIONS,
    MAX_STATE_DIMS,
    LoggedDecision,
    QLearner,
    RewardOutcome,
    Stats,
    __version__,
    evaluate_export,
)
from .analysis import to_dataframe
from .client import AsyncClient, AsyncEventStream, Client, EventStream, RemoteModel
from .types import (
    Decision,
    DecisionPage,
    DecisionStats,
    DecisionsSetting,
    EndEvent,
    Episode,
    EpisodeEnd,
    EpisodePage,
    Evaluation,
    EvaluationProgress,
    RewardError,
    RewardReceipt,
)
from .errors import (
    BadRequest,
    Conflict,
    ConnectionFailed,
    Forbidden,
    ModelLimitReached,
    NotFound,
    PayloadTooLarge,
    QlearnError,
    QuotaExceeded,
    RateLimited,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
    ValidationError,
)

__all__ = [
    "evaluate_export",
    "AsyncClient",
    "AsyncEventStream",
    "BadRequest",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "Decision",
    "DecisionPage",
    "DecisionStats",
    "DecisionsSetting",
    "EndEvent",
    "Episode",
    "EpisodeEnd",
    "EpisodePage",
    "Evaluation",
    "EvaluationProgress",
    "RewardError",
    "RewardReceipt",
    "EventStream",
    "Forbidden",
    "ModelLimitReached",
    "NotFound",
    "PayloadTooLarge",
    "QlearnError",
    "QuotaExceeded",
    "RateLimited",
    "RemoteModel",
    "ServiceUnavailable",
    "TooManyRequests",
    "Unauthorized",
    "ValidationError",
    "to_dataframe",
    "FORMAT_VERSION",
    "MAX_ACTIONS",
    "MAX_STATE_DIMS",
    "LoggedDecision",
    "QLearner",
    "RewardOutcome",
    "Stats",
    "__version__",
]
