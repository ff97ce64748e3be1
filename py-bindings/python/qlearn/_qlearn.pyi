"""Type stub of the compiled extension qlearn._qlearn (checked by mypy.stubtest)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal, SupportsFloat, SupportsIndex, TypedDict, final

import numpy as np
import numpy.typing as npt

from .types import DecisionStats

__all__ = ["QLearner", "Stats", "LoggedDecision", "RewardOutcome", "evaluate_export", "__version__", "MAX_ACTIONS", "MAX_STATE_DIMS", "FORMAT_VERSION"]

__version__: str
MAX_ACTIONS: int
MAX_STATE_DIMS: int
FORMAT_VERSION: int

_Algorithm = Literal["q_learning", "sarsa", "expected_sarsa", "double_q_learning"]
_Exploration = Literal["epsilon_greedy", "softmax"]
#: Target policies of an offline evaluation.
_Policy = Literal["greedy", "exploring", "uniform", "logged", "baseline"]
#: The doubly robust estimators' direct model.
_Direct = Literal["log_means", "q_values", "none"]

#: A state: an int (bool and numpy integers count as ints), a str, or an
#: array state (a sequence of up to 64 finite numbers, or a 1-d numpy array).
_State = int | str | Sequence[SupportsFloat | SupportsIndex] | np.ndarray[Any, Any] | np.integer[Any] | np.bool_
#: Allowed actions: indices, or a numpy bool mask of length n_actions.
_Actions = Sequence[SupportsIndex] | npt.NDArray[np.integer[Any]] | npt.NDArray[np.bool_]
#: A batch of states: a 1-d integer array, a 2-d numeric array (one array
#: state per row), or a sequence of states.
_States = npt.NDArray[Any] | Sequence[_State]
#: A stored state as items() gives it: an int, a str, or a tuple of numbers
#: (integral values as ints), as the server's JSON.
_TableState = int | str | tuple[int | float, ...]
_IntArrayLike = npt.NDArray[np.integer[Any]] | npt.NDArray[np.bool_] | Sequence[SupportsIndex]
_FloatArrayLike = npt.NDArray[Any] | Sequence[SupportsFloat | SupportsIndex]
_BoolArrayLike = npt.NDArray[np.bool_] | npt.NDArray[np.integer[Any]] | Sequence[bool | int]

class _StateBin(TypedDict):
    low: float
    high: float
    bins: int

class _Config(TypedDict):
    n_actions: int
    learning_rate: float
    discount_factor: float
    epsilon: float
    epsilon_decay: float
    min_epsilon: float
    initial_q: float
    algorithm: _Algorithm
    seed: int | None
    exploration: _Exploration
    temperature: float
    action_names: list[str] | None
    state_bins: list[_StateBin] | None

class _StatsDict(TypedDict):
    predictions: int
    updates: int
    episodes: int
    states: int
    epsilon: float
    mean_reward: float
    recent_returns: list[float]

@final
class Stats:
    """A snapshot of a model's statistics (see QLearner.stats)."""

    @property
    def predictions(self) -> int: ...
    @property
    def updates(self) -> int: ...
    @property
    def episodes(self) -> int: ...
    @property
    def states(self) -> int: ...
    @property
    def epsilon(self) -> float: ...
    @property
    def mean_reward(self) -> float: ...
    @property
    def recent_returns(self) -> list[float]: ...
    def to_dict(self) -> _StatsDict: ...

_Aggregation = Literal["sum", "first", "last", "mean", "min", "max"]
_Number = SupportsFloat | SupportsIndex

class _DecisionsSetting(TypedDict):
    reward_wait_seconds: int
    default_reward: float | None
    aggregation: _Aggregation
    retention_days: int

@final
class LoggedDecision:
    """A logged decision (QLearner.decide)."""

    @property
    def decision_id(self) -> str: ...
    @property
    def episode_id(self) -> str | None: ...
    @property
    def step(self) -> int: ...
    @property
    def action(self) -> int: ...
    @property
    def probability(self) -> float: ...
    @property
    def q_values(self) -> list[float]: ...
    @property
    def closes_at(self) -> float: ...
    @property
    def replayed(self) -> bool: ...

@final
class RewardOutcome:
    """What a reward did (QLearner.reward)."""

    @property
    def status(self) -> Literal["open", "closed", "applied", "late", "duplicate"]: ...
    @property
    def reward(self) -> float | None: ...
    @property
    def rewards(self) -> int: ...
    @property
    def closes_at(self) -> float: ...
    @property
    def learned(self) -> int: ...

@final
class QLearner:
    """A tabular Q-learning agent running the qlearn engine in-process."""

    def __new__(
        cls,
        n_actions: SupportsIndex,
        learning_rate: float = 0.1,
        discount_factor: float = 0.95,
        epsilon: float = 0.1,
        epsilon_decay: float = 1.0,
        min_epsilon: float = 0.01,
        initial_q: float = 0.0,
        algorithm: _Algorithm = "q_learning",
        seed: SupportsIndex | None = None,
        *,
        exploration: _Exploration = "epsilon_greedy",
        temperature: float = 1.0,
        action_names: Sequence[str] | None = None,
        state_bins: Sequence[tuple[float, float, int] | _StateBin] | None = None,
    ) -> QLearner: ...
    def predict(
        self, state: _State, explore: bool = True, allowed_actions: _Actions | None = None
    ) -> int: ...
    def q_values(self, state: _State) -> list[float]: ...
    def action_probabilities(
        self, state: _State, allowed_actions: _Actions | None = None, explore: bool = True
    ) -> list[float]: ...
    def update(
        self,
        state: _State,
        action: SupportsIndex,
        reward: SupportsFloat,
        next_state: _State,
        done: bool | np.bool_ = False,
        truncated: bool | np.bool_ = False,
        next_action: SupportsIndex | None = None,
        next_allowed_actions: _Actions | None = None,
    ) -> float: ...
    def predict_many(self, states: _States, explore: bool = True) -> npt.NDArray[np.int64]: ...
    def update_many(
        self,
        states: _States,
        actions: _IntArrayLike,
        rewards: _FloatArrayLike,
        next_states: _States,
        dones: _BoolArrayLike,
        truncateds: _BoolArrayLike | None = None,
        next_actions: _IntArrayLike | None = None,
    ) -> npt.NDArray[np.float64]: ...
    @property
    def epsilon(self) -> float: ...
    @epsilon.setter
    def epsilon(self, value: float) -> None: ...
    @property
    def n_actions(self) -> int: ...
    @property
    def learning_rate(self) -> float: ...
    @learning_rate.setter
    def learning_rate(self, value: float) -> None: ...
    @property
    def discount_factor(self) -> float: ...
    @discount_factor.setter
    def discount_factor(self, value: float) -> None: ...
    @property
    def epsilon_decay(self) -> float: ...
    @epsilon_decay.setter
    def epsilon_decay(self, value: float) -> None: ...
    @property
    def min_epsilon(self) -> float: ...
    @min_epsilon.setter
    def min_epsilon(self, value: float) -> None: ...
    @property
    def initial_q(self) -> float: ...
    @initial_q.setter
    def initial_q(self, value: float) -> None: ...
    @property
    def algorithm(self) -> _Algorithm: ...
    @algorithm.setter
    def algorithm(self, value: _Algorithm) -> None: ...
    @property
    def exploration(self) -> _Exploration: ...
    @exploration.setter
    def exploration(self, value: _Exploration) -> None: ...
    @property
    def temperature(self) -> float: ...
    @temperature.setter
    def temperature(self, value: float) -> None: ...
    @property
    def seed(self) -> int | None: ...
    @property
    def action_names(self) -> list[str] | None: ...
    @action_names.setter
    def action_names(self, value: Sequence[str] | None) -> None: ...
    @property
    def state_bins(self) -> list[_StateBin] | None: ...
    @property
    def config(self) -> _Config: ...
    @property
    def stats(self) -> Stats: ...
    def items(self) -> list[tuple[_TableState, list[float]]]: ...
    def __iter__(self) -> Iterator[tuple[_TableState, list[float]]]: ...
    def greedy_policy(self) -> dict[_TableState, int]: ...
    def state_values(self) -> dict[_TableState, float]: ...
    def to_numpy(self) -> tuple[list[_TableState], npt.NDArray[np.float64]]: ...
    def __len__(self) -> int: ...
    def to_bytes(self) -> bytes: ...
    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> QLearner: ...
    def save(self, path: str | os.PathLike[str]) -> None: ...
    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> QLearner: ...
    def to_json(self) -> str: ...
    @classmethod
    def from_json(cls, text: str) -> QLearner: ...
    def __reduce__(self) -> tuple[Any, tuple[bytes]]: ...
    def __setstate__(self, state: str | None) -> None: ...
    def __copy__(self) -> QLearner: ...
    def __deepcopy__(self, memo: Any = None) -> QLearner: ...
    def enable_decisions(
        self,
        reward_wait_seconds: SupportsIndex = 600,
        default_reward: _Number | None = None,
        aggregation: _Aggregation = "sum",
        retention_days: SupportsIndex = 30,
    ) -> None: ...
    def disable_decisions(self) -> None: ...
    @property
    def decisions_setting(self) -> _DecisionsSetting | None: ...
    def decide(
        self,
        state: _State,
        *,
        allowed_actions: _Actions | None = None,
        explore: bool = True,
        decision_id: str | None = None,
        episode_id: str | None = None,
        baseline_action: int | None = None,
        now: _Number | None = None,
    ) -> LoggedDecision: ...
    def reward(
        self,
        decision_id: str,
        value: _Number,
        *,
        reward_id: str | None = None,
        final: bool = False,
        now: _Number | None = None,
    ) -> RewardOutcome: ...
    def end_episode(
        self,
        episode_id: str,
        outcome: Literal["terminated", "truncated"] = "terminated",
        *,
        next_state: _State | None = None,
        next_allowed_actions: _Actions | None = None,
    ) -> int: ...
    def settle(self, now: _Number | None = None) -> int: ...
    @property
    def decision_stats(self) -> DecisionStats | None: ...
    def decision_status(self, decision_id: str) -> Literal["open", "closed", "applied", "expired"] | None: ...
    def decisions_to_json(self) -> str | None: ...
    def load_decisions(self, text: str | None) -> None: ...
    def evaluate(
        self,
        policy: _Policy = "greedy",
        *,
        episodes: bool = False,
        direct: _Direct = "log_means",
        candidate: QLearner | None = None,
        explore: bool = True,
        reward_range: tuple[float, float] | None = None,
        confidence: float = 0.95,
        replicates: int = 200,
        seed: int = 0,
        min_ess: float = 10.0,
        min_coverage: float = 0.95,
        discount: float = 1.0,
    ) -> dict[str, Any]: ...

def evaluate_export(
    source: str | os.PathLike[str] | Iterable[str | bytes],
    policy: _Policy = "logged",
    *,
    model: QLearner | None = None,
    episodes: bool = False,
    direct: _Direct = "log_means",
    candidate: QLearner | None = None,
    explore: bool = True,
    reward_range: tuple[float, float] | None = None,
    confidence: float = 0.95,
    replicates: int = 200,
    seed: int = 0,
    min_ess: float = 10.0,
    min_coverage: float = 0.95,
    discount: float = 1.0,
) -> dict[str, Any]: ...
