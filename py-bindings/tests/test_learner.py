"""QLearner: construction, predict, update, q_values, properties, stats."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

import qlearn
from qlearn import QLearner


def test_defaults_are_the_specs():
    a = QLearner(4)
    assert a.n_actions == 4
    assert a.learning_rate == 0.1
    assert a.discount_factor == 0.95
    assert a.epsilon == 0.1
    assert a.epsilon_decay == 1.0
    assert a.min_epsilon == 0.01
    assert a.initial_q == 0.0
    assert a.algorithm == "q_learning"
    assert a.exploration == "epsilon_greedy"
    assert a.temperature == 1.0
    assert a.seed is None
    assert a.action_names is None
    assert a.state_bins is None
    assert len(a) == 0


def test_q_learning_rule_done_and_truncated():
    a = QLearner(2, learning_rate=0.5, discount_factor=0.9, epsilon=0.0, seed=1)
    # Terminal: no bootstrap. td = 2 - 0.
    assert a.update(1, 0, 2.0, 2, done=True) == pytest.approx(2.0)
    assert a.q_values(1) == pytest.approx([1.0, 0.0])
    # Bootstraps from max Q(1, .) = 1.0: target 1 + 0.9 * 1.0.
    assert a.update(0, 1, 1.0, 1) == pytest.approx(1.9)
    assert a.q_values(0) == pytest.approx([0.0, 0.95])
    # Truncated ends the episode but still bootstraps.
    assert a.update(5, 0, 0.0, 1, truncated=True) == pytest.approx(0.9)
    s = a.stats
    assert (s.updates, s.episodes, s.states) == (3, 2, 3)
    assert s.recent_returns == pytest.approx([2.0, 1.0])
    assert s.mean_reward == pytest.approx(1.0)
    assert len(a) == 3


def test_next_allowed_actions_restrict_the_max():
    a = QLearner(3, learning_rate=1.0, discount_factor=1.0, seed=0)
    a.update(1, 0, 5.0, 9, done=True)
    a.update(1, 2, 1.0, 9, done=True)
    assert a.update(0, 0, 0.0, 1, next_allowed_actions=[1, 2]) == pytest.approx(1.0)
    assert a.update(0, 1, 0.0, 1) == pytest.approx(5.0)
    mask = np.array([False, True, True])
    assert a.update(0, 2, 0.0, 1, next_allowed_actions=mask) == pytest.approx(1.0)


def test_sarsa_needs_next_action():
    a = QLearner(2, algorithm="sarsa", learning_rate=1.0, discount_factor=1.0, seed=0)
    with pytest.raises(ValueError, match="next_action"):
        a.update(0, 0, 1.0, 1)
    a.update(1, 1, 3.0, 2, done=True)
    assert a.update(0, 0, 0.0, 1, next_action=1) == pytest.approx(3.0)
    assert a.update(0, 1, 0.0, 1, next_action=0) == pytest.approx(0.0)


@pytest.mark.parametrize("algorithm", ["q_learning", "sarsa", "expected_sarsa", "double_q_learning"])
def test_every_algorithm_learns_a_two_state_chain(algorithm):
    a = QLearner(2, algorithm=algorithm, learning_rate=0.5, epsilon=0.2, seed=3)
    for _ in range(300):
        s = 0
        act = a.predict(s)
        for _ in range(10):
            s2 = 1 if act == 1 else 0
            done = s == 1 and act == 1
            r = 1.0 if done else 0.0
            nxt = a.predict(s2)
            a.update(s, act, r, s2, done=done, next_action=nxt)
            if done:
                break
            s, act = s2, nxt
    assert a.predict(0, explore=False) == 1
    assert a.predict(1, explore=False) == 1


def test_epsilon_decays_at_episode_ends_to_the_floor():
    a = QLearner(2, epsilon=1.0, epsilon_decay=0.5, min_epsilon=0.2, seed=0)
    a.update(0, 0, 0.0, 1)
    assert a.epsilon == 1.0
    a.update(0, 0, 0.0, 1, done=True)
    assert a.epsilon == 0.5
    a.update(0, 0, 0.0, 1, truncated=True)
    assert a.epsilon == 0.25
    a.update(0, 0, 0.0, 1, done=True)
    assert a.epsilon == 0.2
    assert a.stats.epsilon == 0.2


def test_epsilon_is_settable_and_checked():
    a = QLearner(2)
    a.epsilon = 0.05
    assert a.epsilon == 0.05
    with pytest.raises(ValueError, match="epsilon"):
        a.epsilon = 1.5
    assert a.epsilon == 0.05
    with pytest.raises(TypeError):
        a.epsilon = "high"  # type: ignore[assignment]


def test_hyperparameters_are_settable_through_the_engine():
    a = QLearner(3, seed=0)
    a.learning_rate = 0.5
    a.discount_factor = 0.5
    a.epsilon_decay = 0.9
    a.min_epsilon = 0.0
    a.temperature = 2.0
    a.exploration = "softmax"
    a.initial_q = 1.0
    a.action_names = ["a", "b", "c"]
    assert (a.learning_rate, a.discount_factor, a.epsilon_decay) == (0.5, 0.5, 0.9)
    assert (a.min_epsilon, a.temperature, a.exploration) == (0.0, 2.0, "softmax")
    assert a.q_values(42) == [1.0, 1.0, 1.0]
    assert a.action_names == ["a", "b", "c"]
    with pytest.raises(ValueError, match="learning_rate"):
        a.learning_rate = 0.0
    assert a.learning_rate == 0.5
    with pytest.raises(ValueError, match="algorithm"):
        a.algorithm = "dqn"
    # Q(0, 1) = 1 + 0.5 * (3 - 1) = 2 (done: no bootstrap); the rest initial_q.
    a.update(0, 1, 3.0, 1, done=True)
    assert a.q_values(0) == pytest.approx([1.0, 2.0, 1.0])
    # Switching to double Q-learning keeps the values (both tables start
    # as the old one, and q_values shows their mean).
    a.algorithm = "double_q_learning"
    assert a.q_values(0) == pytest.approx([1.0, 2.0, 1.0])
    assert a.algorithm == "double_q_learning"
    with pytest.raises(AttributeError):
        a.n_actions = 5  # type: ignore[misc]
    with pytest.raises(AttributeError):
        a.seed = 3  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del a.epsilon


def test_config_rebuilds_an_equivalent_agent():
    a = QLearner(3, learning_rate=0.3, seed=9, exploration="softmax", temperature=0.5,
                 action_names=["x", "y", "z"], state_bins=[(0.0, 1.0, 4)])
    b = QLearner(**a.config)
    assert b.config == a.config
    assert a.config["state_bins"] == [{"low": 0.0, "high": 1.0, "bins": 4}]
    for i in range(20):
        assert a.predict([i / 20]) == b.predict([i / 20])


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"n_actions": 0}, "n_actions"),
        ({"n_actions": 4097}, "n_actions"),
        ({"n_actions": -1}, "n_actions"),
        ({"n_actions": 2**70}, "n_actions"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"learning_rate": 1.5}, "learning_rate"),
        ({"learning_rate": math.nan}, "learning_rate"),
        ({"discount_factor": -0.1}, "discount_factor"),
        ({"epsilon": 1.01}, "epsilon"),
        ({"epsilon_decay": 0.0}, "epsilon_decay"),
        ({"min_epsilon": 2.0}, "min_epsilon"),
        ({"initial_q": math.inf}, "initial_q"),
        ({"temperature": 0.0}, "temperature"),
        ({"algorithm": "dqn"}, "algorithm"),
        ({"exploration": "ucb"}, "exploration"),
        ({"action_names": ["a", "a", "b", "c"]}, "action_names"),
        ({"action_names": ["a"]}, "action_names"),
        ({"state_bins": []}, "state_bins"),
        ({"state_bins": [(1.0, 1.0, 3)]}, r"state_bins\[0\]"),
        ({"state_bins": [(0.0, 1.0, 0)]}, r"state_bins\[0\].bins"),
        ({"state_bins": [(0.0, 1.0, -3)]}, r"state_bins\[0\].bins"),
        ({"seed": -1}, "seed"),
        ({"seed": 2**64}, "seed"),
    ],
)
def test_out_of_range_configuration_is_a_value_error_naming_the_field(kwargs, field):
    args = {"n_actions": 4, **kwargs}
    with pytest.raises(ValueError, match=field):
        QLearner(**args)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_actions": "4"},
        {"n_actions": 4.0},
        {"learning_rate": "0.1"},
        {"seed": "1"},
        {"seed": 1.5},
        {"action_names": "abcd"},
        {"state_bins": 3},
        {"state_bins": [(0.0, 1.0)]},
        {"state_bins": [{"low": 0.0, "high": 1.0}]},
    ],
)
def test_wrong_configuration_types_are_type_errors(kwargs):
    args = {"n_actions": 4, **kwargs}
    with pytest.raises(TypeError):
        QLearner(**args)


def test_predict_on_unseen_state_does_not_store_it_and_breaks_ties_at_random():
    a = QLearner(4, seed=0)
    actions = {a.predict(s, explore=False) for s in range(200)}
    assert actions == {0, 1, 2, 3}
    assert len(a) == 0
    assert a.stats.predictions == 200


def test_greedy_prediction_follows_the_q_values():
    a = QLearner(4, learning_rate=1.0, seed=0)
    a.update("s", 2, 5.0, "t", done=True)
    assert all(a.predict("s", explore=False) == 2 for _ in range(50))


def test_allowed_actions_restrict_greedy_and_exploration():
    a = QLearner(4, epsilon=1.0, seed=0)
    assert {a.predict(0, allowed_actions=[1, 3]) for _ in range(200)} == {1, 3}
    assert {a.predict(0, allowed_actions=(2,)) for _ in range(20)} == {2}
    assert {a.predict(0, allowed_actions=np.array([0, 2])) for _ in range(100)} == {0, 2}
    mask = np.array([False, True, False, False])
    assert {a.predict(0, allowed_actions=mask) for _ in range(20)} == {1}
    a.update(7, 0, 10.0, 8, done=True)
    assert a.predict(7, explore=False, allowed_actions=[1, 2, 3]) != 0
    assert a.predict(7, explore=False, allowed_actions=None) == 0


@pytest.mark.parametrize(
    ("allowed", "match"),
    [
        ([], "must not be empty"),
        ([4], "outside"),
        ([-1], "outside"),
        ([1, 1], "twice"),
        (np.array([True, False]), "mask"),
        (np.zeros(4, dtype=bool), "must not be empty"),
        (np.array([0, 1, 1, 0], dtype=np.int8), "looks like a 0/1 action mask"),
    ],
)
def test_bad_allowed_actions_are_value_errors(allowed, match):
    a = QLearner(4)
    with pytest.raises(ValueError, match=match):
        a.predict(0, allowed_actions=allowed)
    with pytest.raises(ValueError, match=match):
        a.update(0, 0, 1.0, 1, next_allowed_actions=allowed)
    assert a.stats.predictions == 0
    assert a.stats.updates == 0


@pytest.mark.parametrize("allowed", ["01", [0.5], 3, [[0, 1]]])
def test_allowed_actions_of_a_wrong_type_are_type_errors(allowed):
    with pytest.raises(TypeError):
        QLearner(4).predict(0, allowed_actions=allowed)


@pytest.mark.parametrize(
    ("args", "kwargs", "exc", "match"),
    [
        ((0, 4, 1.0, 1), {}, ValueError, "action 4 is outside 0..4"),
        ((0, -1, 1.0, 1), {}, ValueError, "action -1 is outside 0..4"),
        ((0, 1, math.nan, 1), {}, ValueError, "reward"),
        ((0, 1, math.inf, 1), {}, ValueError, "reward"),
        ((0, 1, 1e13, 1), {}, ValueError, "reward"),
        ((0, 1, 1.0, 1), {"next_action": 9}, ValueError, "next_action"),
        ((0, 1, 1.0, 1), {"next_action": -2}, ValueError, "next_action"),
        ((0, 1.0, 1.0, 1), {}, TypeError, None),
        ((0, "1", 1.0, 1), {}, TypeError, None),
        ((0, 1, "1.0", 1), {}, TypeError, None),
        ((0, 1, 1.0, 1.5), {}, TypeError, "float is not a state"),
        ((0, 1, 1.0, 1), {"done": "yes"}, TypeError, None),
        ((0, 1, 1.0, [1, math.nan]), {}, ValueError, "next_state: element 1 is not a finite number"),
        ((0, 2**80, 1.0, 1), {}, ValueError, "action: integer out of the 64-bit signed range"),
        ((0, 1, 10**400, 1), {}, ValueError, "reward"),
        ((0, 1, 1.0, 1), {"next_action": 2**70}, ValueError, "next_action"),
        ((0, 1, 1.0, 1), {"next_action": 1.0}, TypeError, "next_action must be an int"),
        ((0, None, 1.0, 1), {}, TypeError, "action must be an int, got NoneType"),
        ((0, 1, None, 1), {}, TypeError, "reward must be a number, got NoneType"),
    ],
)
def test_bad_updates_raise_and_change_nothing(args, kwargs, exc, match):
    a = QLearner(4, seed=0)
    a.update(0, 0, 1.0, 1)
    before = (a.to_bytes(), len(a))
    with pytest.raises(exc, match=match):
        a.update(*args, **kwargs)
    assert (a.to_bytes(), len(a)) == before


def test_numpy_scalars_are_accepted_for_actions_rewards_and_flags():
    a = QLearner(4, learning_rate=1.0, seed=0)
    td = a.update(np.int64(3), np.int32(1), np.float32(2.5), np.uint8(4), done=np.bool_(True))
    assert td == pytest.approx(2.5)
    assert a.q_values(3)[1] == pytest.approx(2.5)
    assert isinstance(a.predict(np.int16(3)), int)


def test_action_names_and_softmax():
    a = QLearner(3, exploration="softmax", temperature=0.01, action_names=["l", "r", "s"],
                 learning_rate=1.0, seed=2)
    a.update(0, 1, 1.0, 0, done=True)
    assert {a.predict(0) for _ in range(50)} == {1}
    a.temperature = 100.0
    assert {a.predict(0) for _ in range(300)} == {0, 1, 2}


def test_state_bins_discretize_array_states():
    a = QLearner(2, learning_rate=1.0, state_bins=[(0.0, 1.0, 10), {"low": -1, "high": 1, "bins": 2}])
    a.update([0.55, 0.5], 1, 1.0, [0.0, 0.0], done=True)
    assert a.q_values([0.51, 0.9]) == [0.0, 1.0]
    assert len(a) == 1
    with pytest.raises(ValueError, match="state_bins"):
        a.predict(3)
    with pytest.raises(ValueError, match="dimensions"):
        a.predict([0.5])


def test_seeded_agents_are_reproducible():
    def run(seed):
        a = QLearner(4, epsilon=0.5, seed=seed)
        out = []
        for t in range(500):
            act = a.predict(t % 17)
            out.append(act)
            a.update(t % 17, act, float(act == 2), (t + 1) % 17, done=t % 50 == 49)
        return out, a.to_bytes()

    assert run(7) == run(7)
    assert run(7)[0] != run(8)[0]


def test_stats_snapshot():
    a = QLearner(2, seed=0)
    a.predict(0)
    a.update(0, 0, 2.0, 1)
    a.update(1, 1, 4.0, 2, done=True)
    s = a.stats
    assert isinstance(s, qlearn.Stats)
    assert s.to_dict() == {
        "predictions": 1, "updates": 2, "episodes": 1, "states": 2, "epsilon": 0.1,
        "mean_reward": 3.0, "recent_returns": [6.0],
    }
    assert "episodes=1" in repr(s)
    assert "n_actions=2" in repr(a)


def test_threads_sharing_one_agent_count_every_call():
    a = QLearner(4, seed=0)
    n_threads, per = 4, 2000

    def work(k):
        for i in range(per):
            act = a.predict(i % 50)
            a.update(i % 50, act, 1.0, (i + 1) % 50)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert a.stats.updates == n_threads * per
    assert a.stats.predictions == n_threads * per
    assert len(a) == 50
