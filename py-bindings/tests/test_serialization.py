"""Binary and JSON serialization, save/load, pickle and copy."""

from __future__ import annotations

import copy
import json
import os
import pathlib
import pickle
import struct

import numpy as np
import pytest

import qlearn
from qlearn import QLearner


def trained(seed=3, **kwargs):
    a = QLearner(4, epsilon=0.3, epsilon_decay=0.9, seed=seed, **kwargs)
    rng = np.random.default_rng(seed)
    for t in range(400):
        s = int(rng.integers(0, 30))
        act = a.predict(s)
        a.update(s, act, float(rng.normal()), int(rng.integers(0, 30)), done=t % 40 == 39)
    a.update("text", 1, 1.0, [1.5, -2.0], done=True)
    return a


def continue_run(a, steps=300):
    """Drives `a` further and returns what it did (actions, td errors, bytes)."""
    out = []
    for t in range(steps):
        s = t % 37
        act = a.predict(s)
        out.append((act, a.update(s, act, (t % 5) - 2.0, (t + 1) % 37, done=t % 25 == 24)))
    return out, a.to_bytes()


def test_bytes_have_the_core_header():
    b = trained().to_bytes()
    assert b[:4] == b"QLRN"
    version, reserved, length = struct.unpack("<HHQ", b[4:16])
    assert version == 1  # a model alone; 2 (qlearn.FORMAT_VERSION) carries a decision log
    assert qlearn.FORMAT_VERSION == 2
    assert reserved == 0
    assert length == len(b) - 20


def test_round_trip_is_exact_and_continues_identically():
    a = trained()
    b = QLearner.from_bytes(a.to_bytes())
    assert b.to_bytes() == a.to_bytes()
    assert b.config == a.config
    assert b.epsilon == a.epsilon and b.stats.to_dict() == a.stats.to_dict()
    assert b.q_values([1.5, -2]) == a.q_values([1.5, -2])
    assert continue_run(a) == continue_run(b)


def test_an_unseeded_model_continues_identically_too():
    a = trained(seed=None)
    b = QLearner.from_bytes(a.to_bytes())
    assert continue_run(a) == continue_run(b)


@pytest.mark.parametrize("algorithm", ["sarsa", "expected_sarsa", "double_q_learning"])
def test_round_trip_of_every_algorithm(algorithm):
    a = QLearner(3, algorithm=algorithm, action_names=["a", "b", "c"],
                 state_bins=[(0, 1, 5), (-1, 1, 3)], seed=4)
    a.update([0.1, 0.2], 1, 1.0, [0.5, 0.5], next_action=2)
    b = QLearner.from_bytes(a.to_bytes())
    assert b.config == a.config
    assert b.q_values([0.1, 0.2]) == a.q_values([0.1, 0.2])


def test_bytes_like_inputs():
    a = trained()
    raw = a.to_bytes()
    for data in (bytearray(raw), memoryview(raw)):
        assert QLearner.from_bytes(data).to_bytes() == raw
    with pytest.raises(TypeError):
        QLearner.from_bytes("QLRN")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        QLearner.from_bytes(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "shorter than"),
        (b"QLRN", "shorter than"),
        (b"NOPE" + bytes(40), "magic"),
        (b"QLRN" + struct.pack("<HHQI", 99, 0, 0, 0), "version 99"),
        (b"QLRN" + struct.pack("<HHQI", 1, 0, 5, 0), "truncated"),
        (b"QLRN" + struct.pack("<HHQI", 1, 0, 3, 0) + b"abc", "checksum"),
    ],
)
def test_bad_bytes_are_value_errors(data, match):
    with pytest.raises(ValueError, match=match):
        QLearner.from_bytes(data)


def test_every_truncation_and_byte_flip_is_a_value_error_or_a_model():
    raw = trained().to_bytes()
    for n in range(0, len(raw), max(1, len(raw) // 200)):
        with pytest.raises(ValueError):
            QLearner.from_bytes(raw[:n])
    for i in range(0, len(raw), max(1, len(raw) // 300)):
        bad = bytearray(raw)
        bad[i] ^= 0x5A
        with pytest.raises(ValueError):
            QLearner.from_bytes(bytes(bad))


def test_save_and_load(tmp_path):
    a = trained()
    p = tmp_path / "agent.qlrn"
    a.save(p)
    assert p.read_bytes() == a.to_bytes()
    assert not [x for x in os.listdir(tmp_path) if ".tmp" in x]
    b = QLearner.load(str(p))
    assert continue_run(a) == continue_run(b)
    a.save(str(p))  # overwrite
    assert QLearner.load(pathlib.Path(p)).to_bytes() == a.to_bytes()


def test_save_and_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        QLearner.load(tmp_path / "missing.qlrn")
    with pytest.raises(OSError):
        QLearner(2).save(tmp_path / "no" / "such" / "dir" / "a.qlrn")
    junk = tmp_path / "junk"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(ValueError, match="cannot decode model"):
        QLearner.load(junk)
    with pytest.raises(TypeError):
        QLearner(2).save(42)  # type: ignore[arg-type]


def test_json_round_trip():
    a = trained()
    text = a.to_json()
    doc = json.loads(text)
    assert doc["format"] == "qlearn-model"
    assert doc["config"]["n_actions"] == 4
    states = [row["state"] for row in doc["q_table"]]
    assert "text" in states and [1.5, -2] not in states  # "text" was stored, [1.5,-2] only bootstrapped
    b = QLearner.from_json(text)
    assert b.to_bytes() == a.to_bytes()
    assert continue_run(a) == continue_run(b)
    with pytest.raises(ValueError):
        QLearner.from_json("{}")
    with pytest.raises(ValueError):
        QLearner.from_json("not json")


def test_pickle_round_trip():
    a = trained()
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        b = pickle.loads(pickle.dumps(a, protocol=protocol))
        assert type(b) is QLearner
        assert b.to_bytes() == a.to_bytes()
    b = pickle.loads(pickle.dumps(a))
    assert continue_run(a) == continue_run(b)
    # Inside containers too.
    box = pickle.loads(pickle.dumps({"agent": a, "n": 1}))
    assert box["agent"].to_bytes() == a.to_bytes()


def test_copy_and_deepcopy_are_independent_and_exact():
    a = trained()
    for b in (copy.copy(a), copy.deepcopy(a), copy.deepcopy([a])[0]):
        assert b is not a
        assert b.to_bytes() == a.to_bytes()
        b.update(0, 0, 100.0, 1)
        assert b.to_bytes() != a.to_bytes()
    c = copy.deepcopy(a)
    assert continue_run(a) == continue_run(c)
