"""In-process decisions and delayed rewards (QLearner.enable_decisions,
decide, reward, end_episode, settle): the service's semantics (issue 14)
with the clock passed in as ``now`` (Unix seconds), so every deadline is
exact."""

from __future__ import annotations

import copy
import pickle
import random
import struct
from pathlib import Path

import pytest

import qlearn

T0 = 1_700_000_000.0
ALGORITHMS = ["q_learning", "sarsa", "expected_sarsa", "double_q_learning"]


def agent(**kw) -> qlearn.QLearner:
    params = dict(n_actions=3, learning_rate=0.5, discount_factor=0.9, epsilon=0.3, seed=7)
    params.update(kw)
    return qlearn.QLearner(**params)


def logging(wait: int = 600, **setting) -> qlearn.QLearner:
    a = agent(epsilon=0.0, learning_rate=1.0)
    a.enable_decisions(reward_wait_seconds=wait, **setting)
    return a


@pytest.mark.parametrize("algorithm, ending", [
    (alg, end) for alg in ALGORITHMS for end in ("terminated", "truncated")
    # sarsa cannot bootstrap a truncated logged episode (refused: tested below)
    if (alg, end) != ("sarsa", "truncated")])
def test_episode_learns_exactly_what_update_learns(algorithm, ending):
    rng = random.Random(algorithm)
    a = agent(algorithm=algorithm)
    a.enable_decisions(reward_wait_seconds=3600)
    b = agent(algorithm=algorithm)  # the same seed: the same choices
    for episode in range(20):
        states = [rng.randrange(6) for _ in range(6)]
        rewards = [rng.uniform(-2, 2) for _ in states]
        masks = [None if rng.random() < 0.5 else sorted(rng.sample(range(3), 2)) for _ in states]
        ep = f"e{episode}"
        t = T0 + episode * 10_000
        logged = [a.decide(s, allowed_actions=m, episode_id=ep, now=t + k) for k, (s, m) in
                  enumerate(zip(states, masks))]
        actions = [b.predict(s, allowed_actions=m) for s, m in zip(states, masks)]
        assert [d.action for d in logged] == actions
        assert [d.step for d in logged] == list(range(len(states)))
        # Rewards in order, each final: step k is learned when it closes,
        # its successor (step k+1) being logged already; the last at the end.
        for k, d in enumerate(logged):
            out = a.reward(d.decision_id, rewards[k], final=True, now=t + 100 + k)
            assert out.status == ("closed" if k == len(states) - 1 else "applied")
            assert out.learned == (0 if k == len(states) - 1 else 1)
        last = len(states) - 1
        for k in range(last):
            b.update(states[k], actions[k], rewards[k], states[k + 1], next_action=actions[k + 1],
                     next_allowed_actions=masks[k + 1])
        if ending == "terminated":
            assert a.end_episode(ep) == 1
            b.update(states[last], actions[last], rewards[last], states[last], done=True)
        else:
            assert a.end_episode(ep, "truncated", next_state=99, next_allowed_actions=[0, 2]) == 1
            b.update(states[last], actions[last], rewards[last], 99, truncated=True,
                     next_allowed_actions=[0, 2])
        assert a.end_episode(ep) == 0 if ending == "terminated" else a.end_episode(
            ep, "truncated", next_state=99, next_allowed_actions=[0, 2]) == 0
    assert a.to_json() == b.to_json()  # table, epsilon, counters, generator (the model alone)
    assert a.decision_stats == qlearn.DecisionStats(decisions=120, rewards=120, pending=0, late=0,
                                                    defaulted=0, applied=120)


def test_rewards_before_the_next_decision_wait_for_it():
    a = logging()
    d0 = a.decide(1, episode_id="e", now=T0)
    out = a.reward(d0.decision_id, 2.0, final=True, now=T0 + 1)
    assert (out.status, out.learned) == ("closed", 0)
    assert a.q_values(1) == [0.0, 0.0, 0.0]
    assert a.decision_status(d0.decision_id) == "closed"
    d1 = a.decide(2, episode_id="e", now=T0 + 2)  # step 0 learned now
    assert a.decision_status(d0.decision_id) == "applied"
    assert a.q_values(1)[d0.action] == 2.0  # lr 1, Q(2, .) = 0
    assert d1.step == 1


def test_one_step_decision_final_reward_learns_at_once():
    a = logging()
    d = a.decide("home", now=T0)
    assert d.probability == 1.0 / 3  # epsilon 0: a three-way tie
    out = a.reward(d.decision_id, 1.5, final=True, now=T0 + 5)
    assert (out.status, out.reward, out.rewards, out.learned) == ("applied", 1.5, 1, 1)
    assert a.q_values("home")[d.action] == 1.5
    assert a.stats.updates == 1 and a.stats.episodes == 1


def test_default_reward_at_the_deadline_and_late_rewards_not_learned():
    a = logging(wait=10, default_reward=-0.5)
    d = a.decide(0, now=T0)
    assert d.closes_at == T0 + 10
    assert a.settle(now=T0 + 9.999) == 0
    assert a.decision_status(d.decision_id) == "open"
    assert a.settle(now=T0 + 10) == 1  # half-open window: closed at exactly +10
    assert a.q_values(0)[d.action] == -0.5
    late = a.reward(d.decision_id, 5.0, now=T0 + 11)
    assert (late.status, late.learned) == ("late", 0)
    assert a.q_values(0)[d.action] == -0.5
    assert a.decision_stats.late == 1 and a.decision_stats.defaulted == 1


def test_late_reward_closes_a_passed_window_without_settle():
    a = logging(wait=10)  # no default reward: an unrewarded decision teaches nothing
    d = a.decide(0, now=T0)
    late = a.reward(d.decision_id, 5.0, now=T0 + 10)
    assert late.status == "late"
    assert a.decision_status(d.decision_id) == "expired"
    assert a.q_values(0) == [0.0, 0.0, 0.0] and a.stats.updates == 0


def test_expired_step_teaches_nothing_and_the_episode_goes_on():
    a = logging(wait=10)
    d0 = a.decide(1, episode_id="e", now=T0)
    d1 = a.decide(2, episode_id="e", now=T0 + 20)  # d0 expires unrewarded
    assert a.settle(now=T0 + 20) == 0
    assert a.decision_status(d0.decision_id) == "expired"
    a.reward(d1.decision_id, 3.0, final=True, now=T0 + 21)
    assert a.end_episode("e") == 1
    assert a.q_values(2)[d1.action] == 3.0 and a.q_values(1) == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("aggregation, expected", [
    ("sum", -6.0), ("first", -3.0), ("last", -2.0), ("mean", -2.0), ("min", -3.0), ("max", -1.0),
])
def test_aggregations_over_all_negative_rewards(aggregation, expected):
    a = logging(wait=60, default_reward=7.0, aggregation=aggregation)
    d = a.decide(0, now=T0)
    statuses = [a.reward(d.decision_id, v, now=T0 + i).status for i, v in enumerate([-3.0, -1.0, -2.0])]
    if aggregation == "first":
        assert statuses == ["applied", "late", "late"]
    else:
        assert statuses == ["open"] * 3
        assert a.settle(now=T0 + 60) == 1
    assert a.q_values(0)[d.action] == expected  # lr 1, terminal
    assert a.decision_stats.defaulted == 0


def test_reward_ids_are_idempotent():
    a = logging()
    d = a.decide(0, now=T0)
    first = a.reward(d.decision_id, 1.0, reward_id="click", now=T0 + 1)
    again = a.reward(d.decision_id, 1.0, reward_id="click", now=T0 + 2)
    assert (first.status, again.status) == ("open", "duplicate")
    assert (again.reward, again.rewards) == (1.0, 1)
    with pytest.raises(ValueError, match="reward_id \"click\" was recorded with value 1"):
        a.reward(d.decision_id, 2.0, reward_id="click", now=T0 + 3)
    a.reward(d.decision_id, 0.5, reward_id="purchase", final=True, now=T0 + 4)
    assert a.q_values(0)[d.action] == 1.5
    assert a.decision_stats.rewards == 2


def test_decision_ids_are_idempotent():
    a = agent(epsilon=0.5)
    a.enable_decisions()
    d = a.decide([1, 2], decision_id="req-1", episode_id="visit", now=T0)
    retry = a.decide((1.0, 2.0), decision_id="req-1", episode_id="visit", now=T0 + 9)
    assert retry.replayed and not d.replayed
    assert (retry.action, retry.probability, retry.closes_at, retry.step) == (
        d.action, d.probability, d.closes_at, d.step)
    assert a.stats.predictions == 1 and a.decision_stats.decisions == 1
    with pytest.raises(ValueError, match="another state or episode"):
        a.decide([1, 3], decision_id="req-1", episode_id="visit", now=T0)


def test_probabilities_are_the_behaviour_policys():
    a = agent(epsilon=0.3)
    a.enable_decisions()
    a.update(0, 2, 1.0, 0, done=True)  # action 2 is greedy in state 0
    d = a.decide(0, now=T0)
    assert d.probability == pytest.approx(0.7 + 0.1 if d.action == 2 else 0.1)
    g = a.decide(0, explore=False, now=T0)
    assert (g.action, g.probability) == (2, 1.0)
    m = a.decide(0, allowed_actions=[0, 1], explore=False, now=T0)
    assert m.probability == 0.5 and m.action in (0, 1)
    assert a.action_probabilities(0) == pytest.approx([0.1, 0.1, 0.8])
    assert a.action_probabilities(0, explore=False) == [0.0, 0.0, 1.0]
    assert a.action_probabilities(0, [0, 1], explore=False) == [0.5, 0.5, 0.0]
    assert a.action_probabilities(0)[d.action] == d.probability  # the same computation
    with pytest.raises(ValueError, match="allowed_actions"):
        a.action_probabilities(0, [5])
    s = agent(exploration="softmax", temperature=1.0)
    s.enable_decisions()
    assert s.decide(0, now=T0).probability == pytest.approx(1 / 3)


def test_sarsa_refuses_a_truncated_end():
    a = agent(algorithm="sarsa")
    a.enable_decisions()
    a.decide(0, episode_id="e", now=T0)
    with pytest.raises(ValueError, match="sarsa"):
        a.end_episode("e", "truncated", next_state=1)


def test_pending_decisions_survive_pickle_copy_and_json():
    a = logging(wait=10, default_reward=1.0)
    d = a.decide(0, episode_id="e", now=T0)
    clones = [pickle.loads(pickle.dumps(a)), copy.copy(a), copy.deepcopy(a), agent(epsilon=0.0, learning_rate=1.0)]
    clones[3].load_decisions(a.decisions_to_json())
    for c in [a, *clones]:
        assert c.decisions_setting == {"reward_wait_seconds": 10, "default_reward": 1.0,
                                       "aggregation": "sum", "retention_days": 30}
        assert c.decision_status(d.decision_id) == "open"
        c.reward(d.decision_id, 2.0, now=T0 + 1)
        assert c.settle(now=T0 + 10) == 0  # closed, waits for the episode
        assert c.end_episode("e") == 1
        assert c.q_values(0)[d.action] == 2.0
    plain = agent()
    assert plain.decisions_to_json() is None and plain.decisions_setting is None
    assert pickle.loads(pickle.dumps(plain)).decision_stats is None


def test_enable_again_keeps_the_log_and_disable_forgets_it():
    a = logging(wait=10)
    d = a.decide(0, now=T0)
    a.enable_decisions(reward_wait_seconds=10, aggregation="max")
    assert a.decision_status(d.decision_id) == "open"
    a.disable_decisions()
    assert a.decision_stats is None
    with pytest.raises(RuntimeError, match="enable_decisions"):
        a.reward(d.decision_id, 1.0, now=T0)


@pytest.mark.parametrize("call, exc, match", [
    (lambda a: a.enable_decisions(reward_wait_seconds=-1), ValueError, "reward_wait_seconds"),
    (lambda a: a.enable_decisions(reward_wait_seconds=30 * 86400 + 1), ValueError, "reward_wait_seconds"),
    (lambda a: a.enable_decisions(aggregation="median"), ValueError, "aggregation"),
    (lambda a: a.enable_decisions(default_reward=float("nan")), ValueError, "default_reward"),
    (lambda a: a.enable_decisions(retention_days=0), ValueError, "retention_days"),
    (lambda a: a.enable_decisions(reward_wait_seconds="60"), TypeError, None),
    (lambda a: a.decide(0, now=float("nan")), ValueError, "now"),
    (lambda a: a.decide(0, now=-1), ValueError, "now"),
    (lambda a: a.decide(0, now="today"), TypeError, "now"),
    (lambda a: a.decide(0, decision_id=5), TypeError, "decision_id must be a str"),
    (lambda a: a.decide(0, decision_id=""), ValueError, "decision_id"),
    (lambda a: a.decide(0, episode_id="x" * 129), ValueError, "episode_id"),
    (lambda a: a.decide(0, allowed_actions=[3]), ValueError, "allowed_actions"),
    (lambda a: a.decide(1.5), TypeError, None),
    (lambda a: a.reward("nope", 1.0, now=T0), ValueError, "decision \"nope\" not found"),
    (lambda a: a.reward("d1", float("inf"), now=T0), ValueError, "value"),
    (lambda a: a.reward("d1", "1", now=T0), TypeError, "value"),
    (lambda a: a.reward("d1", 1.0, reward_id="\n", now=T0), ValueError, "reward_id"),
    (lambda a: a.end_episode("nope"), ValueError, "episode \"nope\" not found"),
    (lambda a: a.end_episode("e", "aborted"), ValueError, "outcome"),
    (lambda a: a.end_episode("e", "truncated"), ValueError, "next_state"),
    (lambda a: a.end_episode("e", "truncated", next_state=[]), ValueError, "next_state"),
    (lambda a: a.load_decisions("{}"), ValueError, "decision log"),
])
def test_bad_input_is_refused_clearly_and_changes_nothing(call, exc, match):
    a = logging()
    a.decide(0, episode_id="e", now=T0)  # d1, step 0 of e
    before = (a.decisions_to_json(), a.to_bytes())
    with pytest.raises(exc, match=match):
        call(a)
    assert (a.decisions_to_json(), a.to_bytes()) == before


def test_ended_episode_refuses_new_decisions_and_another_ending():
    a = logging()
    a.decide(0, episode_id="e", now=T0)
    a.end_episode("e")
    with pytest.raises(ValueError, match="has ended"):
        a.decide(1, episode_id="e", now=T0)
    with pytest.raises(ValueError, match="already ended differently"):
        a.end_episode("e", "truncated", next_state=1)


def test_decisions_off_is_a_clear_error():
    a = agent()
    for call in (lambda: a.decide(0), lambda: a.reward("d1", 1.0), lambda: a.settle(),
                 lambda: a.end_episode("e")):
        with pytest.raises(RuntimeError, match="enable_decisions"):
            call()


def test_shuffled_pieces_apply_every_transition_exactly_once():
    """Random interleavings of one 12-step episode's decisions, rewards and
    end: every transition learned once, and the same Q-table as posting
    the transitions to update() in the order they became ready."""
    for trial in range(200):
        rng = random.Random(trial)
        a = agent(epsilon=0.0, learning_rate=0.5, discount_factor=0.9, seed=trial)
        a.enable_decisions(reward_wait_seconds=3600)
        n = 12
        rewards = [float(rng.randrange(-3, 4)) for _ in range(n)]
        # Decisions come in order; each reward after its decision; the end
        # after the last decision; otherwise any order.
        events = [("d", k) for k in range(n)]
        for k in range(n):
            pos = rng.randrange(events.index(("d", k)) + 1, len(events) + 1)
            events.insert(pos, ("r", k))
        events.insert(rng.randrange(events.index(("d", n - 1)) + 1, len(events) + 1), ("end", 0))
        ids, actions, learned, order = {}, {}, 0, []
        for kind, k in events:
            if kind == "d":
                d = a.decide(100 + k, episode_id="e", now=T0 + k)
                ids[k], actions[k] = d.decision_id, d.action
            elif kind == "r":
                learned += a.reward(ids[k], rewards[k], final=True, now=T0 + 50).learned
            else:
                learned += a.end_episode("e")
            order += [j for j in ids if j not in order and a.decision_status(ids[j]) == "applied"]
            assert a.stats.updates == len(order)  # decide() learns too
        stats = a.decision_stats
        assert stats.applied == n and stats.pending == 0 and a.stats.updates == n
        b = agent(epsilon=0.0, learning_rate=0.5, discount_factor=0.9, seed=trial)
        assert sorted(order) == list(range(n)) and learned <= n
        for k in order:
            if k < n - 1:
                b.update(100 + k, actions[k], rewards[k], 100 + k + 1)
            else:
                b.update(100 + k, actions[k], rewards[k], 100 + k, done=True)
        assert a.items() == b.items(), events


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_same_q_table_as_the_service(roomy, algorithm):
    """The same decisions, rewards (two per step, one repeated, one final)
    and episode ends in-process and through the service: the same actions,
    probabilities and reward receipts, and the same Q-table."""
    pytest.importorskip("httpx", reason="httpx not installed: the client is not usable")
    params = dict(learning_rate=0.5, discount_factor=0.9, epsilon=0.3, seed=11, algorithm=algorithm)
    local = qlearn.QLearner(3, **params)
    local.enable_decisions(reward_wait_seconds=600, aggregation="mean")
    rng = random.Random(algorithm)
    with qlearn.Client(roomy.base) as c:
        c.register(f"same-{algorithm}-{random.randrange(10**9)}@example.com", "correct horse battery")
        mid = c.create_model("same", 3, **params).id
        c.patch_model(mid, decisions={"reward_wait_seconds": 600, "aggregation": "mean"})
        for episode in range(3):
            ep = f"e{episode}"
            steps = []
            for k in range(5):
                state = [rng.randrange(3), rng.randrange(3)]
                mask = None if k % 2 else [0, 2]
                p = c.predict(mid, state, allowed_actions=mask, episode_id=ep, decision_id=f"{ep}-{k}")
                d = local.decide(state, allowed_actions=mask, episode_id=ep, decision_id=f"{ep}-{k}")
                assert (p.action, p.probability, p.step) == (d.action, d.probability, d.step)
                steps.append(d.decision_id)
            for k in reversed(range(5)):  # rewards in reverse order
                for rid, value, final in [("a", rng.uniform(-1, 1), False), ("a", None, False),
                                          ("b", rng.uniform(-1, 1), True)]:
                    if value is None:  # a retry of reward "a": duplicate
                        value = last
                    last = value
                    remote = c.reward(mid, steps[k], value, reward_id=rid, final=final)
                    mine = local.reward(steps[k], value, reward_id=rid, final=final)
                    assert (remote.status, remote.reward, remote.rewards) == (
                        mine.status, mine.reward, mine.rewards)
            outcome = "truncated" if episode == 1 and algorithm != "sarsa" else "terminated"
            nxt = [1, 1] if outcome == "truncated" else None
            assert c.end_episode(mid, ep, outcome, next_state=nxt).learned == local.end_episode(
                ep, outcome, next_state=nxt)
        served = c.export_model(mid)
    assert served.items() == local.items()
    assert served.stats.updates == local.stats.updates == 15


# ---- stop and resume: save/load and bytes carry the decision log ----------

FIXTURE_V1 = Path(__file__).resolve().parents[2] / "qlearn-core" / "tests" / "fixtures" / "model-v1.qlrn"


def resume_story(resume) -> tuple:
    """Pending decisions, an open episode, counted rewards and a reward id,
    then ``resume`` (save and load, bytes, pickle, or nothing), then the
    rest: what the agent ends up with."""
    a = agent()
    a.enable_decisions(reward_wait_seconds=60, default_reward=-0.5, aggregation="mean",
                       retention_days=2)
    d0 = a.decide(0, episode_id="e", now=T0)
    a.reward(d0.decision_id, 1.0, reward_id="r0", now=T0 + 1)
    d1 = a.decide(1, episode_id="e", now=T0 + 2)
    a.decide(2, decision_id="lone", allowed_actions=[0, 2], now=T0 + 3)
    a.reward("lone", 3.0, reward_id="r1", now=T0 + 4)
    a = resume(a)
    assert a.decisions_setting == {"reward_wait_seconds": 60, "default_reward": -0.5,
                                   "aggregation": "mean", "retention_days": 2}
    statuses = [a.decision_status(i) for i in (d0.decision_id, d1.decision_id, "lone")]
    dup = a.reward(d0.decision_id, 1.0, reward_id="r0", now=T0 + 5).status
    a.reward(d0.decision_id, 2.0, final=True, now=T0 + 6)
    d2 = a.decide(0, episode_id="e", now=T0 + 7)
    a.reward("lone", 1.0, now=T0 + 8)
    settled = a.settle(now=T0 + 100)
    ended = a.end_episode("e")
    late = a.reward(d2.decision_id, 9.0, now=T0 + 101).status
    return (statuses, dup, settled, ended, late, a.decision_stats, a.to_bytes())


def test_save_load_bytes_and_pickle_carry_pending_decisions(tmp_path):
    def via_file(a):
        path = tmp_path / "agent.qlrn"
        a.save(path)
        return qlearn.QLearner.load(path)

    straight = resume_story(lambda a: a)
    assert straight[0] == ["open", "open", "open"] and straight[1] == "duplicate"
    assert straight[4] == "late"
    for resume in (via_file, lambda a: qlearn.QLearner.from_bytes(a.to_bytes()),
                   lambda a: qlearn.QLearner.from_bytes(memoryview(a.to_bytes())),
                   lambda a: pickle.loads(pickle.dumps(a))):
        assert resume_story(resume) == straight


def test_the_format_version_says_whether_a_log_is_carried():
    a = agent()
    assert struct.unpack("<H", a.to_bytes()[4:6])[0] == 1  # the service's format, unchanged
    a.enable_decisions()
    a.decide(0, now=T0)
    assert struct.unpack("<H", a.to_bytes()[4:6])[0] == qlearn.FORMAT_VERSION == 2
    a.disable_decisions()
    assert struct.unpack("<H", a.to_bytes()[4:6])[0] == 1
    assert qlearn.QLearner.from_bytes(a.to_bytes()).decisions_setting is None


def test_a_file_of_the_old_format_still_loads():
    old = FIXTURE_V1.read_bytes()
    assert struct.unpack("<H", old[4:6])[0] == 1
    a = qlearn.QLearner.load(FIXTURE_V1)
    assert len(a) == 13 and a.decisions_setting is None
    assert a.to_bytes() == old
    # An earlier version's pickle: the v1 bytes, then the log's JSON.
    donor = logging(wait=10)
    d = donor.decide(0, now=T0)
    b = qlearn.QLearner.from_bytes(agent(epsilon=0.0, learning_rate=1.0).to_bytes())
    b.__setstate__(donor.decisions_to_json())
    assert b.decision_status(d.decision_id) == "open"


def test_a_damaged_log_is_a_value_error():
    a = logging()
    a.decide(0, decision_id="x", now=T0)
    raw = bytearray(a.to_bytes())
    raw[-3] ^= 0x20  # inside the log's JSON: the checksum catches it
    with pytest.raises(ValueError, match="checksum"):
        qlearn.QLearner.from_bytes(bytes(raw))
    # A log that does not fit the model (an action it does not have).
    narrow = qlearn.QLearner(1)
    with pytest.raises(ValueError, match="does not fit"):
        narrow.load_decisions(a.decisions_to_json().replace('"action":0', '"action":2').replace(
            '"action":1', '"action":2'))
