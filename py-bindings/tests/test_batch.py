"""update_many / predict_many: numpy batches, equivalence with single calls,
atomic validation, and the GIL released during the loop."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from qlearn import QLearner


def random_transitions(n, n_states=50, n_actions=4, seed=0):
    rng = np.random.default_rng(seed)
    s = rng.integers(0, n_states, n)
    a = rng.integers(0, n_actions, n)
    r = rng.normal(size=n)
    s2 = rng.integers(0, n_states, n)
    done = rng.random(n) < 0.1
    trunc = rng.random(n) < 0.05
    return s, a, r, s2, done, trunc


@pytest.mark.parametrize("algorithm", ["q_learning", "expected_sarsa", "double_q_learning", "sarsa"])
def test_update_many_equals_the_same_updates_one_by_one(algorithm):
    s, a, r, s2, done, trunc = random_transitions(2000)
    na = np.roll(a, -1)
    one = QLearner(4, algorithm=algorithm, epsilon_decay=0.99, seed=5)
    many = QLearner(4, algorithm=algorithm, epsilon_decay=0.99, seed=5)
    expected = [
        one.update(int(s[i]), int(a[i]), float(r[i]), int(s2[i]), bool(done[i]), bool(trunc[i]),
                   next_action=int(na[i]))
        for i in range(len(s))
    ]
    td = many.update_many(s, a, r, s2, done, trunc, next_actions=na)
    assert isinstance(td, np.ndarray) and td.dtype == np.float64
    np.testing.assert_array_equal(td, np.array(expected))
    assert many.to_bytes() == one.to_bytes()


def test_update_many_takes_lists_tuples_and_other_dtypes():
    s, a, r, s2, done, _ = random_transitions(300)
    ref = QLearner(4, seed=1)
    ref.update_many(s, a, r, s2, done)
    for conv in (
        lambda x: x.tolist(),
        lambda x: tuple(x.tolist()),
        lambda x: x.astype(np.int32) if x.dtype.kind == "i" else x,
        lambda x: x.astype(np.uint16) if x.dtype.kind == "i" else x,
        lambda x: x[::-1].copy()[::-1],  # negative strides
    ):
        b = QLearner(4, seed=1)
        b.update_many(conv(s), conv(a), conv(r), conv(s2), conv(done))
        assert b.to_bytes() == ref.to_bytes()
    c = QLearner(4, seed=1)
    c.update_many(s, a, r, s2, done.astype(np.int8))
    assert c.to_bytes() == ref.to_bytes()


def test_array_states_as_2d_arrays_rows():
    rng = np.random.default_rng(3)
    states = rng.integers(0, 5, (500, 3)).astype(np.float64)
    next_states = rng.integers(0, 5, (500, 3))  # int rows: the same keys as float rows
    a = rng.integers(0, 2, 500)
    r = rng.normal(size=500)
    d = np.zeros(500, dtype=bool)
    one = QLearner(2, seed=0)
    for i in range(500):
        one.update(states[i], int(a[i]), float(r[i]), next_states[i].tolist(), False)
    many = QLearner(2, seed=0)
    many.update_many(states, a, r, next_states, d)
    assert many.to_bytes() == one.to_bytes()
    # Fortran order and float32 are converted, not misread.
    f = QLearner(2, seed=0)
    f.update_many(np.asfortranarray(states).astype(np.float32), a, r, next_states.tolist(), d)
    assert f.to_bytes() == one.to_bytes()


def test_lists_of_mixed_states():
    a = QLearner(2, learning_rate=1.0, seed=0)
    td = a.update_many(["x", 3, [1, 2]], [0, 1, 0], [1.0, 2.0, 3.0], ["y", "y", "y"],
                       [True, True, True])
    np.testing.assert_array_equal(td, [1.0, 2.0, 3.0])
    assert a.q_values("x") == [1.0, 0.0]
    assert a.q_values(3) == [0.0, 2.0]
    assert a.q_values((1.0, 2.0)) == [3.0, 0.0]
    b = QLearner(2, learning_rate=1.0, seed=0)
    b.update_many(np.array(["x", 3, [1, 2]], dtype=object), [0, 1, 0], [1.0, 2.0, 3.0],
                  np.array(["y", "y", "y"]), [1, 1, 1])
    assert b.to_bytes() == a.to_bytes()


def test_empty_batches():
    a = QLearner(2)
    assert a.update_many([], [], [], [], []).shape == (0,)
    assert a.predict_many([]).shape == (0,)
    assert a.update_many(np.array([], dtype=np.int64), np.array([], dtype=np.int64),
                         np.array([]), np.array([], dtype=np.int64), np.array([], dtype=bool)).shape == (0,)
    assert a.stats.updates == 0


@pytest.mark.parametrize(
    ("change", "exc", "match"),
    [
        (lambda b: b.update(actions=b["actions"][:-1]), ValueError, "invalid actions: has 9 entries but states has 10"),
        (lambda b: b.update(rewards=b["rewards"][:3]), ValueError, "rewards"),
        (lambda b: b.update(next_states=b["next_states"][:3]), ValueError, "next_states"),
        (lambda b: b.update(dones=b["dones"][:3]), ValueError, "dones"),
        (lambda b: b.update(truncateds=np.zeros(2, bool)), ValueError, "truncateds"),
        (lambda b: b.update(actions=np.r_[b["actions"][:9], 4]), ValueError, r"experiences\[9\].*action 4"),
        (lambda b: b.update(actions=np.r_[b["actions"][:9], -1]), ValueError, r"actions\[9\].*-1"),
        (lambda b: b.update(rewards=np.r_[b["rewards"][:5], np.nan, b["rewards"][6:]]), ValueError,
         r"experiences\[5\]\.reward"),
        (lambda b: b.update(next_states=[*range(9), [np.inf]]), ValueError, r"experiences\[9\]"),
        (lambda b: b.update(next_actions=np.full(10, 7)), ValueError, "next_action"),
        (lambda b: b.update(actions=b["actions"].astype(float)), TypeError, "actions must be integers"),
        (lambda b: b.update(states=b["states"].astype(float)), TypeError, "1-d float array"),
        (lambda b: b.update(states=np.zeros((10, 2, 2))), TypeError, "3-d"),
        (lambda b: b.update(states=5), TypeError, "states must be"),
        (lambda b: b.update(rewards="abc"), TypeError, "rewards"),
        (lambda b: b.update(rewards=np.zeros((10, 1))), TypeError, "1-dimensional"),
        (lambda b: b.update(dones=np.zeros(10)), TypeError, "dones"),
        (lambda b: b.update(states=[None] * 10), TypeError, "states"),
        (lambda b: b.update(actions=np.full(10, 2**63, dtype=np.uint64)), ValueError, "64-bit"),
    ],
)
def test_bad_batches_raise_and_apply_nothing(change, exc, match):
    s, a, r, s2, done, _ = random_transitions(10)
    batch = {"states": s, "actions": a, "rewards": r, "next_states": s2, "dones": done}
    change(batch)
    agent = QLearner(4, seed=0)
    agent.update_many(*random_transitions(5, seed=9)[:5])
    before = agent.to_bytes()
    with pytest.raises(exc, match=match):
        agent.update_many(**batch)
    assert agent.to_bytes() == before


@pytest.mark.parametrize("table_states", [0, 5, 400])
def test_a_bad_item_applies_nothing_whatever_the_table_size(table_states):
    # Small tables next to the batch are restored from a copy, large ones
    # validated first: both must leave the model exactly as it was.
    agent = QLearner(4, seed=0, epsilon_decay=0.5)
    if table_states:
        agent.update_many(np.arange(table_states), np.zeros(table_states, dtype=np.int64),
                          np.ones(table_states), np.arange(table_states) + 1,
                          np.arange(table_states) % 7 == 0)
    before = agent.to_bytes()
    n = 50
    s = np.arange(n) + 1000
    a = np.zeros(n, dtype=np.int64)
    a[-1] = 9
    dones = np.ones(n, dtype=bool)
    with pytest.raises(ValueError, match=r"experiences\[49\]"):
        agent.update_many(s, a, np.ones(n), s + 1, dones)
    assert agent.to_bytes() == before
    a[-1] = 1
    td = agent.update_many(s, a, np.ones(n), s + 1, dones)
    assert len(td) == n and agent.stats.updates == table_states + n


def test_predict_many_matches_predict():
    s, a, r, s2, done, _ = random_transitions(3000)
    agent = QLearner(4, seed=2)
    agent.update_many(s, a, r, s2, done)
    states = np.arange(60)
    greedy = agent.predict_many(states, explore=False)
    assert greedy.dtype == np.int64 and greedy.shape == (60,)
    # Greedy choices among unique maxima are deterministic.
    for st, act in zip(states, greedy):
        q = agent.q_values(int(st))
        if q.count(max(q)) == 1:
            assert act == q.index(max(q))
    one, many = QLearner(4, epsilon=0.3, seed=11), QLearner(4, epsilon=0.3, seed=11)
    one.update_many(s, a, r, s2, done)
    many.update_many(s, a, r, s2, done)
    expected = [one.predict(int(x)) for x in states]
    np.testing.assert_array_equal(many.predict_many(states), expected)
    assert many.to_bytes() == one.to_bytes()
    assert many.stats.predictions == 60


def test_predict_many_with_array_states_and_errors():
    agent = QLearner(3, seed=0)
    out = agent.predict_many(np.zeros((5, 2)))
    assert out.shape == (5,)
    assert agent.predict_many([[0, 0], "s", 4]).shape == (3,)
    with pytest.raises(ValueError, match=r"states\[2\]"):
        agent.predict_many([[0, 0], [1, 1], [np.nan, 1]])
    with pytest.raises(TypeError):
        agent.predict_many(np.zeros(3))
    assert agent.stats.predictions == 8


def test_update_many_releases_the_gil():
    n = 3_000_000
    rng = np.random.default_rng(0)
    s = rng.integers(0, 1000, n)
    a = rng.integers(0, 4, n)
    r = np.ones(n)
    s2 = rng.integers(0, 1000, n)
    d = np.zeros(n, dtype=bool)
    agent = QLearner(4, seed=0)
    ticks = []
    running = threading.Event()
    stop = threading.Event()

    def ticker():
        running.set()
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.0005)

    t = threading.Thread(target=ticker)
    t.start()
    running.wait()
    start = time.perf_counter()
    agent.update_many(s, a, r, s2, d)
    end = time.perf_counter()
    stop.set()
    t.join()
    during = [x for x in ticks if start < x < end]
    assert end - start > 0.02, "batch too fast to observe"
    # With the GIL held the ticker could not run at all during the call.
    assert len(during) >= 5, (len(during), end - start)
    assert agent.stats.updates == n


def test_other_threads_wait_for_a_running_batch():
    n = 1_000_000
    s = np.arange(n) % 100
    agent = QLearner(4, seed=0)
    errors = []

    def single_calls():
        try:
            for i in range(200):
                agent.update(i % 100, 0, 1.0, 0)
                agent.predict(i)
        except Exception as e:  # pragma: no cover - the assertion reports it
            errors.append(e)

    t = threading.Thread(target=single_calls)
    t.start()
    agent.update_many(s, np.zeros(n, dtype=np.int64), np.ones(n), s, np.zeros(n, bool))
    t.join()
    assert not errors
    assert agent.stats.updates == n + 200
