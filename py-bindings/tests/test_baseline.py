"""A baseline action recorded with each decision (issue 18): decide(...,
baseline_action=) is checked like an action, kept in the log and its JSON,
part of a retry's identity, and scored by evaluate("baseline")."""

from __future__ import annotations

import json
import random

import pytest

import qlearn

T0 = 1_700_000_000.0
ARMS = [0.2, 0.5, 0.8]


def logging_agent() -> qlearn.QLearner:
    agent = qlearn.QLearner(n_actions=3, epsilon=0.3, seed=3, learning_rate=0.1)
    agent.enable_decisions(reward_wait_seconds=3600)
    return agent


def test_a_baseline_that_picks_the_best_arm_is_estimated_at_its_mean():
    agent = logging_agent()
    rng = random.Random(3)
    for i in range(3000):
        d = agent.decide("home", baseline_action=2, now=T0 + i)
        r = 1.0 if rng.random() < ARMS[d.action] else 0.0
        agent.reward(d.decision_id, r, final=True, now=T0 + i)
    report = agent.evaluate("baseline", reward_range=(0.0, 1.0))
    for r in report["results"]:
        o = r["outcome"]
        assert o["kind"] == "estimate", report
        assert o["ci"]["low"] <= 0.8 <= o["ci"]["high"], (r["estimator"], o)
    # A decision without one: the baseline policy cannot be evaluated.
    d = agent.decide("home", now=T0 + 5000)
    agent.reward(d.decision_id, 1.0, final=True, now=T0 + 5000)
    with pytest.raises(ValueError, match="baseline"):
        agent.evaluate("baseline")


def test_a_baseline_is_an_action_and_part_of_a_retry():
    agent = logging_agent()
    for bad in (3, -1):
        with pytest.raises(ValueError, match="baseline_action"):
            agent.decide("s", baseline_action=bad, now=T0)
    with pytest.raises(TypeError, match="baseline_action"):
        agent.decide("s", baseline_action="1", now=T0)
    assert agent.decision_stats.decisions == 0
    d = agent.decide("s", decision_id="x", baseline_action=1, now=T0)
    assert agent.decide("s", decision_id="x", baseline_action=1, now=T0 + 1).replayed
    for other in (0, None):
        with pytest.raises(ValueError, match="another state or episode"):
            agent.decide("s", decision_id="x", baseline_action=other, now=T0 + 1)
    agent.decide("t", decision_id="y", now=T0)
    log = json.loads(agent.decisions_to_json())
    assert log["decisions"][d.decision_id]["baseline_action"] == 1
    assert "baseline_action" not in log["decisions"]["y"]
    # Without a decision log there is nothing to record it with.
    plain = qlearn.QLearner(n_actions=3)
    with pytest.raises(RuntimeError):
        plain.decide("s", baseline_action=1)
