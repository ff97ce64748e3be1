"""Interop with the qlearn server (saas-host): the Python module's bytes are
the server's export/import format, both ways.

The server is started by conftest.py's `start_server` (a built saas-host on
127.0.0.1, a free port, an in-memory database; skipped without a binary).
"""

from __future__ import annotations

import json
import secrets

import pytest

from qlearn import QLearner


@pytest.fixture(scope="module")
def server(start_server):
    srv = start_server()
    reg = srv.json("POST", "/register",
                   {"email": f"py{secrets.token_hex(4)}@example.com", "password": "correct horse battery"},
                   expect=201)
    srv.token = reg["access_token"]
    return srv


def python_trained() -> QLearner:
    a = QLearner(4, learning_rate=0.3, discount_factor=0.9, epsilon=0.2, epsilon_decay=0.95,
                 seed=42, action_names=["up", "down", "left", "right"])
    for t in range(500):
        s = [t % 7, (t // 7) % 5]
        act = a.predict(s)
        a.update(s, act, 1.0 if act == 3 else -0.1, [(t + 1) % 7, ((t + 1) // 7) % 5],
                 done=t % 50 == 49)
    a.update("lobby", 0, 2.0, 3, done=True)
    return a


def test_a_python_model_imports_into_the_server_and_exports_back(server):
    a = python_trained()
    raw = a.to_bytes()
    status, body, _ = server.call("POST", "/models/import?name=from-python", raw,
                                  content_type="application/octet-stream")
    assert status == 201, body[:500]
    model = json.loads(body)
    assert model["name"] == "from-python"
    assert model["n_actions"] == 4 and model["action_names"] == ["up", "down", "left", "right"]
    assert model["learning_rate"] == 0.3 and model["seed"] == 42
    assert model["stats"]["updates"] == a.stats.updates
    assert model["stats"]["states"] == len(a)

    try:
        check_round_trip(server, a, raw, model)
    finally:
        server.json("DELETE", f"/models/{model['id']}", expect=204)  # the free tier holds 3 models


def check_round_trip(server, a, raw, model):
    status, exported, headers = server.call("GET", f"/models/{model['id']}/export")
    assert status == 200
    assert headers.get("Content-Type") == "application/octet-stream"
    assert exported == raw  # nothing lost or changed on the way
    b = QLearner.from_bytes(exported)
    assert b.to_bytes() == raw
    assert b.q_values("lobby") == a.q_values("lobby")
    status, text, _ = server.call("GET", f"/models/{model['id']}/export?format=json")
    assert status == 200
    assert QLearner.from_json(text.decode()).to_bytes() == raw

    # The server serves the imported Q-table (predictions count, so they come
    # after the exports): its greedy choice is Python's.
    for s in ([0, 0], [3, 2], "lobby"):
        q = a.q_values(s)
        pred = server.json("POST", "/predict", {"model_id": model["id"], "state": s, "explore": False})
        assert pred["q_values"] == pytest.approx(q)
        if q.count(max(q)) == 1:
            assert pred["action"] == q.index(max(q))
    status, after, _ = server.call("GET", f"/models/{model['id']}/export")
    assert QLearner.from_bytes(after).stats.predictions == a.stats.predictions + 3


def test_a_server_trained_model_loads_in_python(server):
    model = server.json("POST", "/models",
                        {"name": "server-side", "n_actions": 3, "learning_rate": 0.5, "seed": 7},
                        expect=201)
    mid = model["id"]
    server.json("POST", "/update/batch", {"model_id": mid, "experiences": [
        {"state": [1, 2], "action": 1, "reward": 1.0, "next_state": [2, 2]},
        {"state": [2, 2], "action": 2, "reward": 5.0, "next_state": "end", "done": True},
        {"state": "s", "action": 0, "reward": -1.0, "next_state": 4, "truncated": True},
    ]})
    server.json("POST", "/update", {"model_id": mid, "state": [1, 2], "action": 1, "reward": 1.0,
                                    "next_state": [2, 2]})
    status_doc = server.json("GET", f"/status/{mid}")
    status, exported, _ = server.call("GET", f"/models/{mid}/export")
    assert status == 200
    a = QLearner.from_bytes(exported)
    assert a.n_actions == 3 and a.learning_rate == 0.5 and a.seed == 7
    assert a.stats.updates == 4 and a.stats.episodes == 2
    assert len(a) == status_doc["q_table"]["total"] == 3
    for row in status_doc["q_table"]["rows"]:
        assert a.q_values(row["state"]) == pytest.approx(row["q_values"])
    # Python continues from it, and the continuation goes back to the server.
    a.update([2, 2], 0, 3.0, "end", done=True)
    status, body, _ = server.call("POST", "/models/import?name=continued", a.to_bytes(),
                                  content_type="application/octet-stream")
    assert status == 201, body[:300]
    continued = json.loads(body)
    assert continued["stats"]["updates"] == 5
    server.json("DELETE", f"/models/{mid}", expect=204)
    server.json("DELETE", f"/models/{continued['id']}", expect=204)


def test_action_probabilities_agree_between_python_and_the_server(server):
    # Ties, a mask, explore on and off, an unseen state; epsilon-greedy and
    # softmax. The Rust engine's own function is checked against the same
    # server route in saas-host/tests/api/probabilities.rs.
    for kw in ({"epsilon": 0.25}, {"exploration": "softmax", "temperature": 0.7}):
        a = QLearner(4, learning_rate=1.0, seed=3, **kw)
        for act, r in ((0, 1.0), (1, 0.5), (2, 1.0)):
            a.update([1, 2], act, r, "end", done=True)
        a.enable_decisions()  # a version-2 file: the server imports the model alone
        a.decide("pending", now=1_700_000_000)
        status, body, _ = server.call("POST", "/models/import?name=probs", a.to_bytes(),
                                      content_type="application/octet-stream")
        assert status == 201, body[:300]
        mid = json.loads(body)["id"]
        try:
            for s, allowed, explore in (([1, 2], None, True), ([1, 2], [1, 2, 3], True),
                                        ([1, 2], None, False), ([1, 2], [1, 3], False),
                                        ("unseen", [0, 3], True)):
                body = {"model_id": mid, "state": s, "explore": explore}
                if allowed is not None:
                    body["allowed_actions"] = allowed
                got = server.json("POST", "/predict/probabilities", body)["probabilities"]
                assert got == a.action_probabilities(s, allowed, explore), (kw, s, allowed, explore)
        finally:
            server.json("DELETE", f"/models/{mid}", expect=204)


def test_the_server_refuses_bytes_that_are_not_a_model(server):
    status, body, _ = server.call("POST", "/models/import", b"QLRN-not-really",
                                  content_type="application/octet-stream")
    assert 400 <= status < 500 and status != 404, (status, body)
