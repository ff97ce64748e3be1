"""States: the Python forms of a state and their canonical keys."""

from __future__ import annotations

import enum
import math

import numpy as np
import pytest

from qlearn import QLearner

SAME_ARRAY_STATE = [
    [1, 2],
    (1, 2),
    [1.0, 2.0],
    (1.0, 2),
    [np.int64(1), np.float32(2.0)],
    [True, 2],
    np.array([1, 2]),
    np.array([1, 2], dtype=np.int8),
    np.array([1, 2], dtype=np.uint64),
    np.array([1.0, 2.0]),
    np.array([1.0, 2.0], dtype=np.float32),
    np.array([[1, 0], [2, 0]])[:, 0],  # non-contiguous view
]


@pytest.mark.parametrize("form", SAME_ARRAY_STATE, ids=repr)
def test_array_forms_are_one_state(form):
    a = QLearner(2, learning_rate=1.0)
    a.update([1, 2], 1, 3.0, 0, done=True)
    assert a.q_values(form) == [0.0, 3.0]
    a.update(form, 1, 3.0, 0, done=True)
    assert len(a) == 1


class Color(enum.IntEnum):
    RED = 5


@pytest.mark.parametrize(
    "form", [5, True + 4, np.int64(5), np.uint8(5), np.array(5), Color.RED], ids=repr
)
def test_integer_forms_are_one_state(form):
    a = QLearner(2, learning_rate=1.0)
    a.update(5, 0, 1.0, 0, done=True)
    assert a.q_values(form) == [1.0, 0.0]


def test_bool_is_the_int_it_equals():
    a = QLearner(2, learning_rate=1.0)
    a.update(True, 0, 1.0, False, done=True)
    assert a.q_values(1) == [1.0, 0.0]
    assert a.q_values(np.bool_(True)) == [1.0, 0.0]
    assert a.q_values([True, False]) == a.q_values([1, 0])


def test_strings_and_numpy_strings():
    a = QLearner(2, learning_rate=1.0)
    a.update("s1", 1, 1.0, "s2", done=True)
    assert a.q_values(np.str_("s1")) == [0.0, 1.0]
    assert a.q_values("") == [0.0, 0.0]
    a.update("ünï", 0, 2.0, "s2", done=True)
    assert a.q_values("ünï") == [2.0, 0.0]


def test_kinds_never_collide_and_negative_zero_is_zero():
    a = QLearner(2, learning_rate=1.0)
    a.update(1, 0, 1.0, 0, done=True)
    assert a.q_values("1") == [0.0, 0.0]
    assert a.q_values([1]) == [0.0, 0.0]
    a.update([-0.0, 1.5], 1, 1.0, 0, done=True)
    assert a.q_values([0.0, 1.5]) == [0.0, 1.0]
    assert a.q_values(np.array([-0.0, 1.5])) == [0.0, 1.0]


def test_64_numbers_are_the_limit():
    a = QLearner(2)
    a.predict(list(range(64)))
    a.predict(np.arange(64))
    for bad in (list(range(65)), tuple(range(65)), np.arange(65), [], (), np.array([])):
        with pytest.raises(ValueError, match="1 to 64 numbers"):
            a.predict(bad)


@pytest.mark.parametrize(
    "bad",
    [[math.nan], [1.0, math.inf], (-math.inf,), np.array([1.0, np.nan]), 2**63, -(2**63) - 1,
     "x" * 1025],
    ids=repr,
)
def test_invalid_states_are_value_errors(bad):
    a = QLearner(2)
    with pytest.raises(ValueError):
        a.predict(bad)
    with pytest.raises(ValueError):
        a.update(bad, 0, 1.0, 0)
    assert len(a) == 0 and a.stats.updates == 0


@pytest.mark.parametrize(
    "bad",
    [1.5, 2.0, np.float64(2.0), None, {"a": 1}, {1, 2}, b"bytes", [[1, 2]], ["a", "b"], [None],
     np.zeros((2, 2)), np.array(["a", "b"]), np.array(1.5), object(), 1 + 2j, [1 + 2j]],
    ids=repr,
)
def test_states_of_a_wrong_type_are_type_errors(bad):
    a = QLearner(2)
    with pytest.raises(TypeError):
        a.predict(bad)
    with pytest.raises(TypeError):
        a.q_values(bad)
    with pytest.raises(TypeError):
        a.update(0, 0, 1.0, bad)
    assert a.stats.updates == 0


def test_the_error_names_the_argument():
    a = QLearner(2)
    with pytest.raises(TypeError, match="next_state"):
        a.update(0, 0, 1.0, None)
    with pytest.raises(ValueError, match="state: element 0 is not a finite number"):
        a.update([math.nan], 0, 1.0, 0)


def test_a_huge_int_is_refused_not_wrapped():
    a = QLearner(2)
    a.predict(2**63 - 1)
    a.predict(-(2**63))
    with pytest.raises(ValueError, match="64-bit"):
        a.predict(2**64 + 1)


def test_byte_swapped_and_read_only_arrays():
    a = QLearner(2, learning_rate=1.0)
    a.update([1, 2], 1, 3.0, 0, done=True)
    for form in (np.array([1, 2], dtype=">i8"), np.array([1, 2], dtype=">f8"),
                 np.array([1, 2], dtype="<i2")):
        assert a.q_values(form) == [0.0, 3.0]
    ro = np.array([1.0, 2.0])
    ro.setflags(write=False)
    assert a.q_values(ro) == [0.0, 3.0]
    b = QLearner(2, learning_rate=1.0)
    b.update_many(np.array([[1, 2]], dtype=">f8"), np.array([1], dtype=">i8"),
                  np.array([3.0], dtype=">f8"), np.array([0], dtype=">i4"), np.array([True]))
    assert b.q_values([1, 2]) == [0.0, 3.0]
