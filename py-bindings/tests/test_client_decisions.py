"""Decisions and delayed rewards through qlearn.Client / qlearn.AsyncClient,
against the real server (conftest.py's `roomy` and `free` servers, fresh for
this module), plus the retry rule and the event stream's `event: end`."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets
import threading
import time

import pytest

httpx = pytest.importorskip("httpx")

import qlearn  # noqa: E402

PASSWORD = "correct horse battery"


def email() -> str:
    return f"d{secrets.token_hex(5)}@example.com"


@pytest.fixture
def user(roomy):
    with qlearn.Client(roomy.base) as c:
        c.register(email(), PASSWORD)
        yield c


def logging_model(c: qlearn.Client, wait: int = 600, **setting) -> str:
    mid = c.create_model("decide", 3, epsilon=0.0, learning_rate=0.5, seed=1).id
    info = c.patch_model(mid, decisions={"reward_wait_seconds": wait, **setting})
    assert info.decisions == qlearn.DecisionsSetting(wait, setting.get("default_reward"),
                                                     setting.get("aggregation", "sum"), 7)
    return mid


def test_predict_logs_a_decision_and_rewards_report_their_status(user):
    mid = logging_model(user)
    plain = user.create_model("plain", 3).id
    p = user.predict(plain, 1)
    assert (p.decision_id, p.probability, p.step) == (None, None, None)

    d = user.predict(mid, [1, 2])
    assert d.decision_id and d.probability == pytest.approx(1 / 3) and d.step is None  # a 3-way tie
    r = user.reward(mid, d.decision_id, 0.5, reward_id="r1")
    assert isinstance(r, qlearn.RewardReceipt)
    assert (r.decision_id, r.status, r.reward, r.rewards) == (d.decision_id, "open", 0.5, 1)
    assert user.reward(mid, d.decision_id, 0.5, reward_id="r1").status == "duplicate"
    with pytest.raises(qlearn.Conflict):  # the same reward_id with another value
        user.reward(mid, d.decision_id, 2.0, reward_id="r1")
    r = user.reward(mid, d.decision_id, 1.0, final=True)
    assert r.status in ("closed", "applied") and r.reward == 1.5 and r.rewards == 2
    with pytest.raises(qlearn.NotFound):
        user.reward(mid, "no-such-decision", 1.0)

    # the one-step decision is learned as a terminal transition: Q = 0.5 * 1.5
    deadline = time.monotonic() + 10
    while user.decisions(mid, status="applied").total < 1:
        assert time.monotonic() < deadline, "the closed decision was never applied"
        time.sleep(0.2)
    assert user.status(mid).q_table.rows[0].q_values[d.action] == pytest.approx(0.75)

    # a client decision_id is an idempotency key: the retry answers the logged decision
    first = user.predict(mid, 7, decision_id="mine-1")
    again = user.predict(mid, 7, decision_id="mine-1")
    assert first.decision_id == again.decision_id == "mine-1" and first.action == again.action
    with pytest.raises(qlearn.Conflict):  # the same decision_id for another state
        user.predict(mid, 8, decision_id="mine-1")

    batch = user.rewards(mid, [{"decision_id": "mine-1", "value": 1.0, "reward_id": "b1"},
                               {"decision_id": "nope", "value": 1.0},
                               {"decision_id": "mine-1", "value": 1.0, "reward_id": "b1"}])
    assert [type(x).__name__ for x in batch] == ["RewardReceipt", "RewardError", "RewardReceipt"]
    assert batch[0].status == "open" and batch[2].status == "duplicate"
    assert (batch[1].decision_id, batch[1].code) == ("nope", "not_found")
    with pytest.raises(ValueError):
        user.rewards(mid, [])
    with pytest.raises(ValueError):
        user.rewards(mid, [{"decision_id": "x", "value": 1, "bonus": 2}])


def test_a_late_reward_is_recorded_not_learned(user):
    mid = logging_model(user, wait=0)  # every reward arrives at or after the deadline
    d = user.predict(mid, "s")
    r = user.reward(mid, d.decision_id, 3.0)
    assert r.status == "late" and r.rewards == 0
    page = user.decisions(mid)
    assert page.stats.late == 1 and page.stats.rewards == 0 and page.decisions[0].rewards == 0


def test_episodes_listing_and_export(user):
    mid = logging_model(user)
    steps = [user.predict(mid, s, episode_id="ep-1") for s in (0, 1, 2)]
    assert [p.step for p in steps] == [0, 1, 2]
    for p in steps:
        user.reward(mid, p.decision_id, 1.0, final=True)
    end = user.end_episode(mid, "ep-1", "terminated")
    assert isinstance(end, qlearn.EpisodeEnd) and end.episode_id == "ep-1" and end.learned == 1
    assert user.end_episode(mid, "ep-1", "terminated").learned == 0  # the same way: no effect
    with pytest.raises(qlearn.Conflict):
        user.end_episode(mid, "ep-1", "truncated", next_state=3)
    with pytest.raises(qlearn.Conflict):  # a decision in an ended episode
        user.predict(mid, 3, episode_id="ep-1")
    with pytest.raises(qlearn.NotFound):
        user.end_episode(mid, "no-such-episode", "terminated")
    with pytest.raises(ValueError):
        user.end_episode(mid, "ep-1", "finished")
    assert user.get_model(mid).stats.updates == 3

    open_ = user.predict(mid, 9)  # one more, still open
    page = user.decisions(mid, limit=2)
    assert page.total == 4 and len(page.decisions) == 2
    assert [d.step for d in page.decisions] == [0, 1] and page.decisions[0].episode_id == "ep-1"
    assert page.stats.decisions == 4 and page.stats.applied == 3 and page.stats.pending == 1
    every = list(user.iter_decisions(mid, page_size=3))
    assert [d.decision_id for d in every] == [p.decision_id for p in steps] + [open_.decision_id]
    assert [d.state for d in every] == [0, 1, 2, 9]
    assert [d.decision_id for d in user.iter_decisions(mid, status="open")] == [open_.decision_id]
    assert user.decisions(mid, status="applied").total == 3
    assert user.decisions(mid, until=0).total == 0 and user.decisions(mid, since=0).total == 4
    with pytest.raises(ValueError):
        user.decisions(mid, status="pending")

    exported = user.export_decisions(mid)
    assert exported == every and all(isinstance(d, qlearn.Decision) for d in exported)
    assert exported[0].status == "applied" and exported[0].reward == 1.0
    assert exported[0].time_datetime.tzinfo is not None
    assert [d.decision_id for d in user.export_decisions(mid, status="open")] == [open_.decision_id]
    raw = user._http.get(f"/models/{mid}/decisions/export",
                         headers={"Authorization": f"Bearer {user._secret}"}).text
    assert [json.loads(line) for line in raw.splitlines()] == [dataclasses.asdict(d) for d in exported]

    assert user.patch_model(mid, decisions=None).decisions is None
    assert user.decisions(mid).total == 0
    assert user.patch_model(mid, decisions=qlearn.DecisionsSetting(reward_wait_seconds=5)).decisions \
        == qlearn.DecisionsSetting(5, None, "sum", 7)


#: The SPEC's free tier (5/s, burst 10) with decision logging, a paid feature.
FREE_WITH_DECISIONS = {"free": {"monthly_calls": 100, "max_models": 3, "rate_per_second": 5,
                                "burst": 10, "features": ["decisions"]}}


def test_a_predict_with_a_decision_id_is_retried_when_rate_limited(start_server):
    free = start_server(FREE_WITH_DECISIONS)
    seen: list[int] = []
    with qlearn.Client(free.base, max_retries=20, max_retry_wait=5) as c:
        c._http.event_hooks["response"] = [lambda r: seen.append(r.status_code)]
        mid = c.register(email(), PASSWORD).default_model_id
        c.patch_model(mid, decisions={})
        ids = [c.predict(mid, i, decision_id=f"d{i}").decision_id for i in range(15)]
        assert ids == [f"d{i}" for i in range(15)] and 429 in seen  # burst 10: some were retried
        seen.clear()
        for i in range(15):  # rewards with a reward_id are retried too
            assert c.reward(mid, f"d{i}", 1.0, reward_id=f"r{i}").status == "open"
        assert 429 in seen
        assert c.decisions(mid).stats.decisions == 15
        assert c.dashboard().usage.calls == 30  # each retried call metered once
        with pytest.raises(qlearn.RateLimited):  # without a key: never retried
            for i in range(25):
                c.predict(mid, i)


def _one_503_then(status: int, body: dict):
    """A transport answering the first request 503, then `body`."""
    sent: list[dict] = []

    def handle(request):
        sent.append(json.loads(request.content))
        if len(sent) == 1:
            return httpx.Response(503, headers={"Retry-After": "0"},
                                  json={"error": {"code": "unavailable", "message": "busy"}})
        return httpx.Response(status, json=body)

    return httpx.MockTransport(handle), sent


PREDICTION = {"action": 1, "action_name": None, "q_values": [0, 0], "explored": False, "epsilon": 0.1,
              "decision_id": "k", "probability": 0.95}
RECEIPT = {"decision_id": "k", "status": "open", "reward": 1.0, "rewards": 1,
           "closes_at": "2026-12-05T00:10:00Z"}


def test_the_retry_rule_follows_the_idempotency_keys():
    transport, sent = _one_503_then(200, PREDICTION)
    with qlearn.Client("http://qlearn.test", token="t", transport=transport) as c:
        assert c.predict("m", 1, decision_id="k").probability == 0.95
        assert len(sent) == 2 and sent[0] == sent[1] and sent[0]["decision_id"] == "k"
    for call in (lambda c: c.predict("m", 1), lambda c: c.reward("m", "k", 1.0),
                 lambda c: c.rewards("m", [{"decision_id": "k", "value": 1.0, "reward_id": "a"},
                                           {"decision_id": "k", "value": 2.0}])):
        transport, sent = _one_503_then(200, PREDICTION)
        with qlearn.Client("http://qlearn.test", token="t", transport=transport) as c:
            with pytest.raises(qlearn.ServiceUnavailable):
                call(c)
            assert len(sent) == 1
    transport, sent = _one_503_then(200, RECEIPT)
    with qlearn.Client("http://qlearn.test", token="t", transport=transport) as c:
        assert c.reward("m", "k", 1.0, reward_id="r").status == "open" and len(sent) == 2
    transport, sent = _one_503_then(200, {"results": [RECEIPT]})
    with qlearn.Client("http://qlearn.test", token="t", transport=transport) as c:
        assert c.rewards("m", [{"decision_id": "k", "value": 1, "reward_id": "r"}])[0].status == "open"
        assert len(sent) == 2
    transport, sent = _one_503_then(200, {"episode_id": "e", "learned": 1})
    with qlearn.Client("http://qlearn.test", token="t", transport=transport) as c:
        assert c.end_episode("m", "e", "terminated").learned == 1 and len(sent) == 2


def test_the_event_stream_ends_cleanly_when_the_password_changes(roomy, user):
    mid = user.create_model("live", 2).id
    got: list = []
    with user.events(mid) as stream:
        user.update(mid, 1, 0, 1.0, 2)

        def read() -> None:
            got.extend(stream)  # returns (no exception) on `event: end`

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        time.sleep(0.3)
        user.change_password(PASSWORD, PASSWORD + " 2")
        reader.join(timeout=20)
        assert not reader.is_alive(), "the stream did not end after the password change"
    assert [e.state for e in got] == [1]
    assert stream.end is not None and stream.end.reason == "credential_revoked"
    # a new stream with the new token works
    with user.events(mid) as again:
        user.update(mid, 3, 1, 1.0, 4)
        assert next(iter(again)).state == 3 and again.end is None


def test_episodes_pages_by_key(user):
    mid = logging_model(user)
    a = [user.predict(mid, s, episode_id="ep-a") for s in (0, 1)]
    for p, value in zip(a, (1.0, 2.0)):
        user.reward(mid, p.decision_id, value, final=True)
    user.end_episode(mid, "ep-a", "terminated")
    user.predict(mid, 5, episode_id="ep-b")
    c = user.predict(mid, 7, episode_id="ep-c")
    user.reward(mid, c.decision_id, 0.5, final=True)
    user.end_episode(mid, "ep-c", "truncated", next_state=8)

    page = user.episodes(mid, limit=2)
    assert isinstance(page, qlearn.EpisodePage) and isinstance(page.episodes[0], qlearn.Episode)
    assert [e.episode_id for e in page.episodes] == ["ep-a", "ep-b"] and page.next_after == "ep-b"
    ep_a, ep_b = page.episodes
    assert (ep_a.status, ep_a.outcome, ep_a.steps, ep_a.learned_return) == ("ended", "terminated", 2, 3.0)
    assert ep_a.started_at.endswith("Z") and ep_a.last_decision_at.endswith("Z")
    assert (ep_b.status, ep_b.outcome, ep_b.steps, ep_b.learned_return) == ("open", None, 1, 0.0)
    rest = user.episodes(mid, after=page.next_after, limit=2)
    assert [(e.episode_id, e.outcome, e.learned_return) for e in rest.episodes] == [("ep-c", "truncated", 0.5)]
    assert rest.next_after is None
    assert [e.episode_id for e in user.episodes(mid, status="ended").episodes] == ["ep-a", "ep-c"]
    assert [e.episode_id for e in user.episodes(mid, status="open").episodes] == ["ep-b"]
    assert user.episodes(user.create_model("plain", 3).id) == qlearn.EpisodePage([], None)
    with pytest.raises(qlearn.NotFound):
        user.episodes("no-such-model")
    for bad in ({"status": "done"}, {"limit": 0}, {"limit": 1001}, {"after": ""}):
        with pytest.raises(ValueError):
            user.episodes(mid, **bad)
    with pytest.raises(TypeError, match="limit"):
        user.episodes(mid, limit="5")


def test_async_decisions_rewards_and_the_stream_end(roomy):
    async def main() -> None:
        async with qlearn.AsyncClient(roomy.base) as c:
            await c.register(email(), PASSWORD)
            mid = (await c.create_model("a", 2, epsilon=0.0)).id
            assert (await c.patch_model(mid, decisions={"aggregation": "max"})).decisions.aggregation == "max"
            p = await c.predict(mid, 4, episode_id="e", decision_id="a-1")
            assert (p.decision_id, p.step) == ("a-1", 0)
            assert (await c.predict(mid, 4, episode_id="e", decision_id="a-1")).step == 0
            assert (await c.reward(mid, "a-1", -1.0)).reward == -1.0
            assert (await c.reward(mid, "a-1", -3.0, reward_id="x")).reward == -1.0  # max
            assert (await c.rewards(mid, [{"decision_id": "a-1", "value": -3.0, "reward_id": "x"}]))[0].status \
                == "duplicate"
            await c.reward(mid, "a-1", 2.0, final=True)
            assert (await c.end_episode(mid, "e", "terminated")).learned == 1
            page = await c.decisions(mid, status="applied")
            assert page.total == 1 and page.decisions[0].reward == 2.0
            assert [d.decision_id async for d in c.iter_decisions(mid, page_size=1)] == ["a-1"]
            assert await c.export_decisions(mid) == page.decisions
            episodes = await c.episodes(mid, status="ended", limit=1)
            assert [(e.episode_id, e.steps) for e in episodes.episodes] == [("e", 1)]
            assert episodes.next_after is None

            async with c.events(mid) as stream:
                await c.update(mid, 1, 0, 1.0, 2)
                await c.change_password(PASSWORD, PASSWORD + " 2")

                async def drain() -> list:
                    return [e async for e in stream]

                got = await asyncio.wait_for(drain(), timeout=20)
            assert [e.state for e in got] == [1] and stream.end and stream.end.reason == "credential_revoked"

    asyncio.run(main())


def test_predict_records_a_baseline_action(user):
    mid = logging_model(user)
    d = user.predict(mid, 1, decision_id="b1", baseline_action=2)
    assert user.predict(mid, 1, decision_id="b1", baseline_action=2).decision_id == d.decision_id
    with pytest.raises(qlearn.Conflict):  # another baseline on a retry
        user.predict(mid, 1, decision_id="b1", baseline_action=0)
    with pytest.raises(qlearn.ValidationError) as e:
        user.predict(mid, 1, baseline_action=3)
    assert e.value.field == "baseline_action"
    with pytest.raises(qlearn.ValidationError):  # a model that logs no decisions
        user.predict(user.create_model("plain", 3).id, 1, baseline_action=0)
    with pytest.raises(TypeError, match="baseline_action"):
        user.predict(mid, 1, baseline_action=True)
    (listed,) = user.decisions(mid).decisions
    assert (listed.decision_id, listed.baseline_action) == ("b1", 2)
