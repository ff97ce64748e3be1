"""Offline evaluation from Python (issue 18): QLearner.evaluate on the
in-process decision log and qlearn.evaluate_export on the NDJSON export,
thin over qlearn_core::evaluation."""

from __future__ import annotations

import datetime
import json
import random

import pytest

import qlearn

T0 = 1_700_000_000.0
ARMS = [0.2, 0.5, 0.8]


def bandit(epsilon: float = 0.3, n: int = 800, seed: int = 1) -> tuple[qlearn.QLearner, list[float]]:
    """A model that decided n times on three Bernoulli arms, each reward
    final at once; returns it and the logged rewards."""
    agent = qlearn.QLearner(n_actions=3, epsilon=epsilon, seed=seed, learning_rate=0.1)
    agent.enable_decisions(reward_wait_seconds=3600)
    rng = random.Random(seed)
    rewards = []
    for i in range(n):
        d = agent.decide("home", now=T0 + i)
        r = 1.0 if rng.random() < ARMS[d.action] else 0.0
        agent.reward(d.decision_id, r, final=True, now=T0 + i)
        rewards.append(r)
    return agent, rewards


def outcome(report: dict, estimator: str) -> dict:
    (found,) = [r["outcome"] for r in report["results"] if r["estimator"] == estimator]
    return found


def export_lines(agent: qlearn.QLearner) -> list[str]:
    """The decision log as GET /models/{id}/decisions/export writes it."""
    log = json.loads(agent.decisions_to_json())

    def rfc3339(ms: int) -> str:
        t = datetime.datetime.fromtimestamp(ms // 1000, tz=datetime.timezone.utc)
        return t.strftime("%Y-%m-%dT%H:%M:%SZ")

    lines = []
    for rec in sorted(log["decisions"].values(), key=lambda r: (r["time_ms"], r["step"])):
        lines.append(json.dumps({
            "decision_id": rec["decision_id"], "episode_id": rec["episode_id"], "step": rec["step"],
            "time": rfc3339(rec["time_ms"]), "state": rec["state"],
            "allowed_actions": rec["allowed_actions"], "action": rec["action"],
            "probability": rec["probability"], "reward": rec["learned_reward"],
            "status": rec["status"], "rewards": rec["rewards"],
            "closes_at": rfc3339(rec["closes_at_ms"]),
        }))
    return lines


def test_logged_policy_is_the_plain_mean_and_greedy_has_an_interval():
    agent, rewards = bandit(n=3000)
    report = agent.evaluate("logged")
    mean = sum(rewards) / len(rewards)
    assert outcome(report, "ips")["value"] == mean
    assert report["diagnostics"]["n"] == len(rewards)
    assert report["diagnostics"]["max_weight"] == 1.0
    greedy = agent.evaluate("greedy", reward_range=(0.0, 1.0))
    for name in ("ips", "snips", "doubly_robust"):
        o = outcome(greedy, name)
        assert o["kind"] == "estimate"
        assert o["ci"]["low"] <= o["value"] <= o["ci"]["high"]
        assert o["ci"]["method"] == "poisson_bootstrap" and o["ci"]["replicates"] == 200
    assert outcome(greedy, "ips")["bound"]["method"] == "empirical_bernstein"
    assert outcome(greedy, "snips")["bound"] is None
    # Near the greedy policy's true value (its arm's click rate; after
    # 3,000 decisions the greedy arm is the best one, taken in ~80 % of
    # them: a standard error near 0.011).
    pi = agent.action_probabilities("home", explore=False)
    truth = sum(p * m for p, m in zip(pi, ARMS))
    assert truth == 0.8
    for name in ("ips", "snips", "doubly_robust"):
        assert abs(outcome(greedy, name)["value"] - truth) < 0.05, (name, greedy)
    # Same seed, same interval; another seed, another interval.
    assert agent.evaluate("greedy", reward_range=(0.0, 1.0)) == greedy
    assert agent.evaluate("greedy", seed=5) != agent.evaluate("greedy")


def test_exploration_off_gives_insufficient_support():
    agent, _ = bandit(epsilon=0.0, n=300)
    for policy in ("uniform", "exploring"):
        if policy == "exploring":
            agent.epsilon = 0.3
        report = agent.evaluate(policy)
        for r in report["results"]:
            assert r["outcome"]["kind"] == "insufficient_support"
            assert r["outcome"]["reason"] == "low_coverage"
    agent.epsilon = 0.0
    assert outcome(agent.evaluate("greedy"), "ips")["kind"] == "estimate"


def test_export_file_gives_the_in_process_estimates(tmp_path):
    agent, _ = bandit()
    path = tmp_path / "decisions.ndjson"
    path.write_text("\n".join(export_lines(agent)) + "\n")
    a = agent.evaluate("greedy", direct="q_values")
    b = qlearn.evaluate_export(path, "greedy", model=agent, direct="q_values")
    c = qlearn.evaluate_export(export_lines(agent), "greedy", model=agent, direct="q_values")
    assert b == c
    assert a["diagnostics"]["n"] == b["diagnostics"]["n"]
    for ra, rb in zip(a["results"], b["results"]):
        assert rb["outcome"]["value"] == pytest.approx(ra["outcome"]["value"], rel=1e-12)
        assert rb["outcome"]["ci"]["low"] == pytest.approx(ra["outcome"]["ci"]["low"], rel=1e-9)
    logged = qlearn.evaluate_export(str(path))
    assert outcome(logged, "ips")["value"] == pytest.approx(logged["diagnostics"]["logged_mean"], rel=1e-12)


def test_replay_of_the_own_configuration_learns_every_transition():
    agent, _ = bandit(n=400)
    fresh = qlearn.QLearner(n_actions=3, epsilon=0.3, seed=1, learning_rate=0.1)
    report = agent.evaluate(candidate=fresh)
    assert report["learned"] == agent.stats.updates == 400
    assert outcome(report, "ips")["kind"] == "estimate"
    # The candidate itself is not changed (a copy walks the log).
    assert fresh.stats.updates == 0


def test_episodes_are_evaluated_whole():
    agent = qlearn.QLearner(n_actions=2, epsilon=0.3, seed=3)
    agent.enable_decisions(reward_wait_seconds=3600)
    t = T0
    for e in range(60):
        for k in range(3):
            t += 1
            d = agent.decide(k, episode_id=f"e{e}", now=t)
            agent.reward(d.decision_id, float(d.action == k % 2), final=True, now=t)
        agent.end_episode(f"e{e}")
    # One episode left open: skipped.
    agent.decide(0, episode_id="open", now=t + 1)
    report = agent.evaluate("logged", episodes=True, direct="none")
    assert report["skipped_episodes"] == 1
    assert report["diagnostics"]["n"] == 60
    assert [r["estimator"] for r in report["results"]] == ["per_decision_wis", "per_decision_dr"]
    wis = outcome(report, "per_decision_wis")["value"]
    assert wis == pytest.approx(report["diagnostics"]["logged_mean"], rel=1e-12)


@pytest.mark.parametrize("call, error", [
    (lambda a: a.evaluate("best"), ValueError),
    (lambda a: a.evaluate(replicates=0), ValueError),
    (lambda a: a.evaluate(confidence=1.0), ValueError),
    (lambda a: a.evaluate(reward_range=(1.0, 0.0)), ValueError),
    (lambda a: a.evaluate(reward_range=(0.0, 0.5)), ValueError),  # a reward of 1 is outside
    (lambda a: a.evaluate(direct="oracle"), ValueError),
    (lambda a: a.evaluate(episodes=True, direct="log_means"), ValueError),
    (lambda a: a.evaluate("baseline"), ValueError),  # no baseline action recorded
    (lambda a: a.evaluate(replicates="many"), TypeError),
    (lambda a: qlearn.evaluate_export(['{"decision_id": 1}']), ValueError),
    (lambda a: qlearn.evaluate_export(export_lines(a), "greedy"), ValueError),  # needs model=
    (lambda a: qlearn.evaluate_export(42), TypeError),
    (lambda a: qlearn.evaluate_export([1]), TypeError),
])
def test_bad_input_is_refused(call, error):
    agent, _ = bandit(n=50)
    with pytest.raises(error):
        call(agent)


def test_bad_lines_are_named_and_decisions_must_be_on():
    agent, _ = bandit(n=20)
    lines = export_lines(agent)
    lines[3] = lines[3].replace('"probability": ', '"probability": null, "x": ')
    with pytest.raises(ValueError, match="line 4"):
        qlearn.evaluate_export(lines)
    with pytest.raises(RuntimeError, match="enable_decisions"):
        qlearn.QLearner(n_actions=2).evaluate()


def test_the_service_export_evaluates_like_the_in_process_log(roomy):
    """Decisions logged through the service, its NDJSON export evaluated
    here: IPS of the logged policy is the plain mean; the greedy policy of
    the exported model is estimated; with exploration off, uniform random
    has insufficient support."""
    pytest.importorskip("httpx")
    import secrets

    with qlearn.Client(roomy.base) as c:
        c.register(f"e{secrets.token_hex(5)}@example.com", "correct horse battery")
        for epsilon in (0.3, 0.0):
            mid = c.create_model("bandit", 3, epsilon=epsilon, learning_rate=0.1, seed=2).id
            c.patch_model(mid, decisions={"reward_wait_seconds": 3600})
            rng = random.Random(2)
            rewards = []
            for _ in range(300):
                d = c.predict(mid, "home")
                r = 1.0 if rng.random() < ARMS[d.action] else 0.0
                c.reward(mid, d.decision_id, r, final=True)
                rewards.append(r)
            raw = c._http.get(f"/models/{mid}/decisions/export",
                              headers={"Authorization": f"Bearer {c._secret}"}).text
            lines = raw.splitlines()
            assert len(lines) == 300
            logged = qlearn.evaluate_export(lines)
            assert outcome(logged, "ips")["value"] == pytest.approx(sum(rewards) / 300, rel=1e-12)
            model = c.export_model(mid)
            greedy = qlearn.evaluate_export(lines, "greedy", model=model)
            assert greedy["diagnostics"]["n"] == 300
            uniform = outcome(qlearn.evaluate_export(lines, "uniform", model=model), "ips")
            if epsilon == 0.0:
                # Only the first decisions (ties before a click) covered every arm.
                assert (uniform["kind"], uniform["reason"]) == ("insufficient_support", "low_coverage")
                assert 1 / 3 <= uniform["coverage"] < 0.4 and uniform["min"] == 0.95
            else:
                assert uniform["kind"] == "estimate"
