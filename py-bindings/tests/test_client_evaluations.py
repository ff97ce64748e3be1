"""Offline evaluation jobs through qlearn.Client / qlearn.AsyncClient
against the real server (conftest.py's `roomy` server): create, wait, get,
list (newest first, keyset), cancel, and the errors."""

from __future__ import annotations

import asyncio
import random
import secrets

import pytest

httpx = pytest.importorskip("httpx")

import qlearn  # noqa: E402

PASSWORD = "correct horse battery"


@pytest.fixture
def user(roomy):
    with qlearn.Client(roomy.base) as c:
        c.register(f"ev{secrets.token_hex(5)}@example.com", PASSWORD)
        yield c


def bandit(c: qlearn.Client, n: int = 400) -> tuple[str, float]:
    """A logging 2-armed bandit (arm 1 pays 0.8, arm 0 pays 0.2) at epsilon
    0.3; returns its id and the mean reward posted."""
    mid = c.create_model("bandit", 2, epsilon=0.3, epsilon_decay=1.0, min_epsilon=0.3, seed=3).id
    c.patch_model(mid, decisions={"reward_wait_seconds": 3600})
    rng = random.Random(7)
    items, total = [], 0.0
    for _ in range(n):
        d = c.predict(mid, "home")
        r = float(rng.random() < (0.8 if d.action == 1 else 0.2))
        total += r
        items.append({"decision_id": d.decision_id, "value": r, "final": True})
    c.rewards(mid, items)
    return mid, total / n


def test_an_evaluation_job_runs_to_its_result(user):
    mid, mean = bandit(user)
    job = user.create_evaluation(mid, ["greedy", "logged",
                                       {"kind": "candidate", "name": "slow", "config": {"learning_rate": 0.01}}])
    assert isinstance(job, qlearn.Evaluation)
    assert job.status in ("queued", "running") and job.model_id == mid and job.id.startswith("ev_")
    assert job.request["confidence"] == 0.95 and job.request["policies"][0] == {"kind": "greedy"}
    done = user.wait_evaluation(mid, job.id, timeout=60, interval=0.1)
    assert done.status == "done" and done.finished, done
    assert done.progress == qlearn.EvaluationProgress(400, 400)
    r = done.result
    assert r["decisions"] == 400 and r["mode"] == "one_step"
    assert r["logged_reward"]["mean"] == pytest.approx(mean, abs=1e-12)
    greedy = r["policies"][0]["results"][0]
    assert greedy["estimator"] == "ips" and greedy["outcome"]["kind"] == "estimate"
    assert r["policies"][2]["replay"]["learned"] == 400
    assert user.get_evaluation(mid, job.id) == done


def test_evaluations_list_cancel_and_errors(user):
    mid, _ = bandit(user, 20)
    ids = [user.create_evaluation(mid, ["logged"]).id for _ in range(3)]
    for i in ids:
        user.wait_evaluation(mid, i, timeout=60, interval=0.1)
    newest = user.list_evaluations(mid, limit=2)
    assert [j.id for j in newest] == [ids[2], ids[1]]
    assert [j.id for j in user.list_evaluations(mid, before=ids[1])] == [ids[0]]
    user.cancel_evaluation(mid, ids[0])  # finished: its record is deleted
    with pytest.raises(qlearn.NotFound):
        user.get_evaluation(mid, ids[0])
    with pytest.raises(qlearn.ValidationError) as e:
        user.create_evaluation(mid, [])
    assert e.value.field == "policies"
    with pytest.raises(qlearn.ValidationError):
        user.create_evaluation(mid, ["best"])
    plain = user.create_model("plain", 2).id
    with pytest.raises(qlearn.ValidationError) as e:
        user.create_evaluation(plain, ["greedy"])
    assert e.value.field == "decisions"


def test_the_async_client_waits_too(roomy):
    async def go() -> qlearn.Evaluation:
        async with qlearn.AsyncClient(roomy.base) as c:
            await c.register(f"ea{secrets.token_hex(5)}@example.com", PASSWORD)
            m = await c.create_model("b", 2, epsilon=0.5, seed=1)
            await c.patch_model(m.id, decisions={"reward_wait_seconds": 60})
            for _ in range(30):
                d = await c.predict(m.id, 1)
                await c.reward(m.id, d.decision_id, float(d.action), final=True)
            job = await c.create_evaluation(m.id, ["uniform"], replicates=50)
            return await c.wait_evaluation(m.id, job.id, timeout=60, interval=0.1)

    done = asyncio.run(go())
    assert done.status == "done" and done.request["replicates"] == 50
    assert done.result["policies"][0]["policy"] == {"kind": "uniform"}
