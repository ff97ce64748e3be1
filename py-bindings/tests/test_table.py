"""The Q-table seen from Python: QLearner.items / __iter__ / greedy_policy /
state_values / to_numpy and qlearn.to_dataframe (in-process; the same names
on a hosted model are tested in test_client.py)."""

from __future__ import annotations

import numpy as np
import pytest

import qlearn
from qlearn import QLearner


def test_items_list_every_state_in_first_seen_order_in_the_servers_json_form():
    a = QLearner(3, learning_rate=0.5, seed=0)
    a.update([1.0, 2.0], 1, 1.0, "end")
    a.update("end", 2, -1.0, 5, done=True)
    a.update(np.array([0.5, -0.0]), 0, 2.0, 7)
    a.update(5, 0, 4.0, 6)
    items = a.items()
    assert [s for s, _ in items] == [(1, 2), "end", (0.5, 0), 5]
    assert isinstance(items[0][0][0], int) and isinstance(items[2][0][0], float)
    assert items == [(s, a.q_values(list(s) if isinstance(s, tuple) else s)) for s, _ in items]
    assert list(a) == items and len(items) == len(a)
    # a snapshot: later updates do not change a list already taken
    a.update(5, 1, 10.0, 6)
    assert items[3][1] == [2.0, 0.0, 0.0] and a.items()[3][1] == [2.0, 5.0, 0.0]


def test_greedy_policy_and_state_values_take_the_first_best_action():
    a = QLearner(3, learning_rate=1.0, discount_factor=0.0, seed=0)
    a.update("tie", 1, 1.0, "x")
    a.update("tie", 2, 1.0, "x")
    a.update("neg", 0, -1.0, "x")
    assert a.greedy_policy() == {"tie": 1, "neg": 1}
    assert a.state_values() == {"tie": 1.0, "neg": 0.0}


def test_double_q_learning_shows_the_mean_of_both_tables():
    a = QLearner(2, learning_rate=0.5, algorithm="double_q_learning", seed=1)
    for t in range(50):
        a.update(t % 3, t % 2, float(t), (t + 1) % 3)
    for s, q in a.items():
        assert q == a.q_values(s)
    states, q = a.to_numpy()
    assert q.shape == (3, 2) and np.array_equal(q, np.array([a.q_values(s) for s in states]))


def test_state_bins_keys_are_bin_indices():
    a = QLearner(2, state_bins=[(0.0, 1.0, 4), (0.0, 1.0, 2)], seed=0)
    a.update([0.3, 0.9], 1, 1.0, [0.6, 0.1])
    assert [s for s, _ in a.items()] == [(1, 1)]


def test_to_numpy_and_to_dataframe():
    a = QLearner(2, action_names=["left", "right"], seed=0)
    assert a.to_numpy()[0] == [] and a.to_numpy()[1].shape == (0, 2)
    a.update(0, 1, 1.0, 1)
    a.update(1, 0, 2.0, 2)
    states, q = a.to_numpy()
    assert states == [0, 1] and q.dtype == np.float64 and q.tolist() == [a.q_values(0), a.q_values(1)]
    pd = pytest.importorskip("pandas")
    df = qlearn.to_dataframe(a)
    assert isinstance(df, pd.DataFrame) and list(df.columns) == ["left", "right", "value", "greedy_action"]
    assert df.loc[1, "value"] == max(a.q_values(1)) and df.loc[0, "greedy_action"] == 1
    assert qlearn.to_dataframe(QLearner(3)).shape == (0, 5)
    with pytest.raises(TypeError, match="QLearner"):
        qlearn.to_dataframe([1, 2])
