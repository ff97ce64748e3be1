"""A hosted model seen with :class:`qlearn.QLearner`'s names
(:class:`RemoteModel`), from :meth:`qlearn.Client.model`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from ._calls import _Call, _endpoint, _Op, _Plan
from ._convert import _id
from ._qlearn import QLearner
from ._plans import MAX_BATCH, _table_plan
from .analysis import frame
from .types import ModelInfo, Prediction, UpdateResult

if TYPE_CHECKING:
    from .client import _Api


# ---- the hosted model with QLearner's names ----------------------------------------


class RemoteModel:
    """A hosted model seen with :class:`qlearn.QLearner`'s names:
    ``predict`` returns the action, ``update`` the TD error, ``update_many``
    the TD errors, and ``items``/``greedy_policy``/``state_values``/
    ``to_numpy`` read the whole Q-table (paging ``GET /status``). On an
    :class:`AsyncClient` every method returns an awaitable."""

    def __init__(self, client: _Api, model_id: str) -> None:
        self.client = client
        self.id = _id(model_id)

    def __repr__(self) -> str:
        return f"RemoteModel(id={self.id!r})"

    def _execute(self, op: _Op[Any]) -> Any:
        return self.client._execute(op)

    @_endpoint
    def predict(self, state: Any, explore: bool = True, allowed_actions: Any = None) -> _Plan[int]:
        """The chosen action (see :meth:`Client.predict` for the whole answer)."""
        api = type(self.client)
        p: Prediction = yield api.predict.build(self.client, self.id, state, explore, allowed_actions)
        return p.action

    @_endpoint
    def action_probabilities(self, state: Any, allowed_actions: Any = None,
                             explore: bool = True) -> _Plan[list[float]]:
        """The behaviour policy's probability of each action (metered)."""
        api = type(self.client)
        p: list[float] = yield api.action_probabilities.build(self.client, self.id, state, allowed_actions, explore)
        return p

    @_endpoint
    def update(self, state: Any, action: int, reward: float, next_state: Any, done: bool = False,
               truncated: bool = False, next_action: Optional[int] = None,
               next_allowed_actions: Any = None) -> _Plan[float]:
        """The TD error of one update."""
        api = type(self.client)
        u: UpdateResult = yield api.update.build(self.client, self.id, state, action, reward, next_state,
                                                  done, truncated, next_action, next_allowed_actions)
        return u.td_error

    @_endpoint
    def update_many(self, states: Any, actions: Any, rewards: Any, next_states: Any, dones: Any,
                    truncateds: Any = None, next_actions: Any = None,
                    batch_size: int = MAX_BATCH) -> _Plan[np.ndarray[Any, np.dtype[np.float64]]]:
        """See :meth:`Client.update_many`."""
        api = type(self.client)
        return api.update_many.build(self.client, self.id, states, actions, rewards, next_states, dones,
                                     truncateds, next_actions, batch_size)

    @_endpoint
    def info(self) -> _Call[ModelInfo]:
        """The model's hyperparameters and statistics."""
        return type(self.client).get_model.build(self.client, self.id)

    @_endpoint
    def to_learner(self) -> _Call[QLearner]:
        """Downloads the model as a local :class:`qlearn.QLearner`."""
        return type(self.client).export_model.build(self.client, self.id)

    @_endpoint
    def items(self) -> _Plan[list[tuple[Any, list[float]]]]:
        """Every ``(state, q_values)`` pair, as :meth:`qlearn.QLearner.items`."""
        _, states, q = yield from _table_plan(self.id)
        return list(zip(states, q.tolist()))

    @_endpoint
    def greedy_policy(self) -> _Plan[dict[Any, int]]:
        """state -> greedy action (lowest index among ties), as
        :meth:`qlearn.QLearner.greedy_policy`."""
        _, states, q = yield from _table_plan(self.id)
        return dict(zip(states, q.argmax(axis=1).tolist()))

    @_endpoint
    def state_values(self) -> _Plan[dict[Any, float]]:
        """state -> max_a Q(state, a), as :meth:`qlearn.QLearner.state_values`."""
        _, states, q = yield from _table_plan(self.id)
        return dict(zip(states, q.max(axis=1).tolist()))

    @_endpoint
    def to_numpy(self) -> _Plan[tuple[list[Any], np.ndarray[Any, Any]]]:
        """``(states, q)`` as :meth:`qlearn.QLearner.to_numpy`."""
        _, states, q = yield from _table_plan(self.id)
        return states, q

    @_endpoint
    def to_dataframe(self) -> _Plan[Any]:
        """The Q-table as a pandas DataFrame (see :func:`qlearn.analysis.frame`;
        needs pandas)."""
        model, states, q = yield from _table_plan(self.id)
        return frame(states, q, model.action_names)

    def __iter__(self) -> Iterator[tuple[Any, list[float]]]:
        from .client import Client  # here: client.py imports this module

        client = self.client
        if not isinstance(client, Client):
            raise TypeError("iterate an AsyncClient's model with `async for` over client.iter_q_table(id)")
        return client.iter_q_table(self.id)
