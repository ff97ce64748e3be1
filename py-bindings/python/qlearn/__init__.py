"""qlearn: tabular Q-learning with a Rust engine, in-process.

The same engine, hyperparameters and model file format as the qlearn server:
a model trained here uploads to ``POST /models/import``, and a server's
``GET /models/{id}/export`` loads here with :meth:`QLearner.from_bytes`.

>>> import qlearn
>>> agent = qlearn.QLearner(n_actions=4, seed=0)
>>> a = agent.predict(0)
>>> td = agent.update(0, a, 1.0, 1)

See ``help(qlearn.QLearner)``.
"""

from ._qlearn import (
    FORMAT_VERSION,
    MAX_ACTIONS,
    MAX_STATE_DIMS,
    QLearner,
    Stats,
    __version__,
)

__all__ = [
    "FORMAT_VERSION",
    "MAX_ACTIONS",
    "MAX_STATE_DIMS",
    "QLearner",
    "Stats",
    "__version__",
]
