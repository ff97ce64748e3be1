"""qlearn.Client and qlearn.AsyncClient against the real server (saas-host,
started by conftest.py's `start_server`).

Two servers (conftest.py): `free` keeps the SPEC's free tier (100 calls a
month, 3 models, 5 requests/s burst 10) for the quota, model-limit and
rate-limit errors; `roomy` lifts the free tier's limits for the tests that
make many calls.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import subprocess
import sys

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")

import qlearn  # noqa: E402
from qlearn import QLearner  # noqa: E402

PASSWORD = "correct horse battery"


def email() -> str:
    return f"c{secrets.token_hex(5)}@example.com"


@pytest.fixture
def user(roomy):
    """A registered client of the roomy server."""
    with qlearn.Client(roomy.base) as c:
        c.register(email(), PASSWORD)
        yield c


def trained(n: int = 600, seed: int = 3) -> QLearner:
    a = QLearner(4, learning_rate=0.3, discount_factor=0.9, epsilon=0.2, epsilon_decay=0.97, seed=seed,
                 action_names=["n", "s", "w", "e"])
    for t in range(n):
        s = [t % 5, (t // 5) % 4]
        a.update(s, a.predict(s), 1.0 if t % 3 else -0.5, [(t + 1) % 5, t % 4], done=t % 40 == 39)
    a.update("goal", 1, 5.0, 9, done=True)
    a.update(12, 2, 0.25, "goal")
    return a


def columns(n: int, rng: np.random.Generator):
    states = rng.integers(0, 6, size=(n, 2))
    return (states, rng.integers(0, 4, size=n), rng.normal(size=n),
            (states + 1) % 6, rng.random(n) < 0.05)


# ---- without httpx ------------------------------------------------------------


def test_qlearn_imports_without_httpx_and_the_client_names_the_extra():
    code = (
        "import sys; sys.modules['httpx'] = None\n"
        "import qlearn\n"
        "assert qlearn.QLearner(2).n_actions == 2\n"
        "try:\n"
        "    qlearn.Client('http://127.0.0.1:9')\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "qlearn[client]" in out.stdout


# ---- accounts, keys, dashboard, errors ------------------------------------------------


def test_accounts_keys_and_credentials_never_shown(free):
    addr = email()
    with qlearn.Client(free.base) as c:
        reg = c.register(addr, PASSWORD)
        assert reg.user.email == addr and reg.user.tier == "free" and reg.default_model_id
        assert reg.access_token not in repr(reg) and reg.access_token not in repr(c)
        assert c.me().id == reg.user.id
        assert c.get_model(reg.default_model_id).name == "default"
        assert c.last_rate_limit is not None and c.last_rate_limit.policies["burst"]["q"] == 10

        with pytest.raises(qlearn.Conflict) as e:
            qlearn.Client(free.base).register(addr, PASSWORD)
        assert (e.value.status, e.value.code) == (409, "email_taken")

        with pytest.raises(qlearn.Unauthorized) as e:
            qlearn.Client(free.base).login(addr, "wrong password entirely")
        assert (e.value.status, e.value.code) == (401, "invalid_credentials")
        assert "wrong password" not in str(e.value) + repr(e.value)

        key = c.create_api_key("ci")
        assert key.key.startswith(key.prefix) and key.key not in repr(key)
        assert [k.id for k in c.list_api_keys()] == [key.id]
        with qlearn.Client(free.base, api_key=key.key) as by_key:
            assert by_key.me().email == addr
            assert key.key not in repr(by_key)
            c.delete_api_key(key.id)
            with pytest.raises(qlearn.Unauthorized) as e:
                by_key.me()
            assert e.value.code == "unauthorized"
        assert c.list_api_keys() == []

        new = c.change_password(PASSWORD, PASSWORD + " v2")
        assert c.me().email == addr  # the client switched to the new token
        with qlearn.Client(free.base, token=reg.access_token) as old:
            with pytest.raises(qlearn.Unauthorized):
                old.me()
        assert qlearn.Client(free.base).login(addr, PASSWORD + " v2").expires_in == new.expires_in

        board = c.dashboard()
        assert board.user.email == addr and board.limits.monthly_calls == 100
        assert board.limits.max_models == 3 and (board.limits.rate_per_second, board.limits.burst) == (5, 10)
        assert board.usage.limit == 100 and board.usage.remaining == 100 - board.usage.calls
        assert board.usage.resets_at_datetime.day == 1 and len(board.usage.per_day) >= 28
        assert [m.id for m in board.models] == [reg.default_model_id]
        assert c.health().status == "ok"


def test_quota_model_limit_not_found_and_validation_errors(free):
    with qlearn.Client(free.base) as c:
        reg = c.register(email(), PASSWORD)
        mid = reg.default_model_id
        exps = [{"state": i, "action": i % 4, "reward": 1.0, "next_state": i + 1} for i in range(100)]
        assert len(c.update_batch(mid, exps)) == 100
        assert c.last_rate_limit is not None and c.last_rate_limit.remaining("monthly") == 0
        with pytest.raises(qlearn.QuotaExceeded) as e:
            c.predict(mid, 0)
        now = dt.datetime.now(dt.timezone.utc)
        first = (now.replace(day=28) + dt.timedelta(days=4)).replace(day=1, hour=0, minute=0, second=0,
                                                                     microsecond=0)
        assert (e.value.status, e.value.code) == (429, "quota_exceeded")
        assert e.value.resets_at == first and e.value.retry_after and e.value.retry_after > 0
        assert isinstance(e.value, qlearn.TooManyRequests)

        with pytest.raises(qlearn.ValidationError) as e:
            c.patch_model(mid, learning_rate=1.5)
        assert (e.value.status, e.value.code, e.value.field) == (422, "invalid_field", "learning_rate")
        with pytest.raises(qlearn.ValidationError) as e:
            c.patch_model(mid, n_actions=9)
        assert e.value.field == "n_actions"
        with pytest.raises(qlearn.ValidationError) as e:
            c.import_model(b"QLRN-not-a-model")
        assert e.value.code == "invalid_model"

        c.create_model("two", 2)
        c.create_model("three", 2)
        with pytest.raises(qlearn.ModelLimitReached) as e:
            c.create_model("four", 2)
        assert (e.value.status, e.value.code) == (403, "model_limit_reached")
        assert isinstance(e.value, qlearn.Forbidden)

        c.delete_model(mid)
        with pytest.raises(qlearn.NotFound) as e:
            c.get_model(mid)
        assert (e.value.status, e.value.code) == (404, "not_found")
        with pytest.raises(qlearn.NotFound):
            c.model(mid).to_learner()


def test_another_tenants_model_is_not_found(free, user):
    with qlearn.Client(free.base) as other:
        mid = other.register(email(), PASSWORD).default_model_id
    with qlearn.Client(free.base, token=user._secret) as wrong_server:
        with pytest.raises(qlearn.Unauthorized):  # a token of another server
            wrong_server.get_model(mid)
    mine = user.list_models()[0].id
    with pytest.raises(qlearn.NotFound):
        user.status(mid)
    assert user.status(mine).model.id == mine


def test_retries_a_rate_limited_read_after_retry_after_but_never_a_predict(free):
    seen: list[int] = []

    def count(response):
        seen.append(response.status_code)

    with qlearn.Client(free.base, max_retries=20, max_retry_wait=5) as c:
        c._http.event_hooks["response"] = [count]
        mid = c.register(email(), PASSWORD).default_model_id
        for _ in range(25):  # burst 10, 5/s: some are refused and retried
            assert c.get_model(mid).id == mid
        assert 429 in seen and seen[-1] == 200
        assert c.last_rate_limit is not None and c.last_rate_limit.remaining() is not None

        with pytest.raises(qlearn.RateLimited) as e:  # not idempotent: never retried
            for i in range(25):
                c.predict(mid, i)
        assert (e.value.status, e.value.code) == (429, "rate_limited") and e.value.retry_after

    with qlearn.Client(free.base, token=c._secret, max_retries=0) as no_retry:
        with pytest.raises(qlearn.RateLimited):
            for _ in range(25):
                no_retry.me()
    with qlearn.Client(free.base, token=c._secret, max_retry_wait=0.0) as impatient:
        with pytest.raises(qlearn.RateLimited):  # Retry-After exceeds the wait allowed
            for _ in range(25):
                impatient.me()


def test_connection_failure_and_bad_input():
    port = free_port_closed()
    with qlearn.Client(f"http://127.0.0.1:{port}", timeout=2) as c:
        with pytest.raises(qlearn.ConnectionFailed) as e:
            c.health()
        assert e.value.status == 0
        with pytest.raises(TypeError, match="float alone"):
            c.predict("m", 1.5)
        with pytest.raises(ValueError, match="one per state"):
            c.update_many("m", np.arange(3), np.zeros(2, dtype=int), np.zeros(3), np.arange(3),
                          np.zeros(3, bool))
        with pytest.raises(TypeError, match="actions must hold integers"):
            c.update_many("m", np.arange(3), np.zeros(3), np.zeros(3), np.arange(3), np.zeros(3, bool))
        with pytest.raises(ValueError, match="limit"):
            c.status("m", limit=5000)
        with pytest.raises(ValueError, match="batch_size"):
            c.update_many("m", [1], [0], [0.0], [2], [False], batch_size=1001)
        with pytest.raises(TypeError, match="unknown model parameter"):
            c.create_model("x", 2, learning_rte=0.1)
        with pytest.raises(ValueError, match="id"):
            c.get_model("../me")
        with pytest.raises(ValueError, match=r"experiences\[1\]: missing reward; unknown rewrd"):
            c.update_batch("m", [{"state": 1, "action": 0, "reward": 1.0, "next_state": 2},
                                 {"state": 1, "action": 0, "rewrd": 1.0, "next_state": 2}])
        with pytest.raises(TypeError, match=r"experiences\[0\] must be a dict"):
            c.update_batch("m", [(1, 0, 1.0, 2)])
        with pytest.raises(ValueError, match="1 to 1000"):
            c.update_batch("m", [])
        with pytest.raises(TypeError):
            c.import_model("not bytes")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        qlearn.Client("localhost:8000")
    with pytest.raises(ValueError, match="not both"):
        qlearn.Client("http://x", api_key="k", token="t")


def free_port_closed() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- models and the engine ------------------------------------------------------------------


def test_models_crud(user):
    m = user.create_model("grid", 4, learning_rate=0.5, seed=11, action_names=["u", "d", "l", "r"],
                          state_bins=[(0.0, 1.0, 4), {"low": -1.0, "high": 1.0, "bins": 2}])
    assert (m.name, m.n_actions, m.learning_rate, m.seed) == ("grid", 4, 0.5, 11)
    assert m.state_bins is not None and m.state_bins[0].bins == 4 and m.stats.updates == 0
    assert m.id in [x.id for x in user.list_models()]
    p = user.patch_model(m.id, name="grid2", epsilon=0.3, action_names=None)
    assert (p.name, p.epsilon, p.action_names) == ("grid2", 0.3, None)
    assert user.get_model(m.id) == p
    user.delete_model(m.id)
    assert m.id not in [x.id for x in user.list_models()]


def test_predict_update_and_batches_match_the_local_engine(user):
    local = trained()
    mid = user.import_model(local, name="twin").id
    remote = user.model(mid)
    p = user.predict(mid, [0, 0], explore=False, allowed_actions=[1, 2])
    assert p.action in (1, 2) and p.q_values == pytest.approx(local.q_values([0, 0]))
    assert p.action_name == ["n", "s", "w", "e"][p.action] and not p.explored
    local.predict([0, 0], explore=False, allowed_actions=[1, 2])
    # The behaviour policy over HTTP: the local engine's numbers exactly.
    assert user.action_probabilities(mid, [0, 0], [1, 2]) == local.action_probabilities([0, 0], [1, 2])
    assert remote.action_probabilities("goal", explore=False) == local.action_probabilities("goal", explore=False)

    u = user.update(mid, [1, 2], 3, 0.5, [2, 2])
    assert u.td_error == local.update([1, 2], 3, 0.5, [2, 2])
    assert remote.update("goal", 0, 1.0, 4, done=True) == local.update("goal", 0, 1.0, 4, done=True)

    rng = np.random.default_rng(5)
    cols = columns(2500, rng)  # three batches
    td = user.update_many(mid, *cols)
    assert td.dtype == np.float64 and np.array_equal(td, local.update_many(*cols))
    batch = user.update_batch(mid, [{"state": "goal", "action": 1, "reward": 2.0, "next_state": 3,
                                     "truncated": True}])
    assert batch[0].td_error == local.update("goal", 1, 2.0, 3, truncated=True)
    assert user.export_bytes(mid) == local.to_bytes()  # every bit, counters and RNG included

    bad = columns(4, rng)
    bad[2][3] = 1e13  # over the reward bound: the second batch of two is refused whole
    with pytest.raises(qlearn.ValidationError) as e:
        remote.update_many(*bad, batch_size=2)
    assert e.value.field == "experiences[1].reward" and e.value.applied == 2
    local.update_many(*(c[:2] for c in bad))
    assert remote.to_learner().to_bytes() == local.to_bytes()


def test_export_import_round_trip_is_bit_identical(user):
    local = trained(900, seed=8)
    info = user.import_model(local, name="up")
    assert info.name == "up" and info.stats.updates == local.stats.updates and info.stats.states == len(local)
    back = user.export_model(info.id)
    assert back.to_bytes() == local.to_bytes()
    assert back.q_values("goal") == local.q_values("goal")
    again = user.import_model(user.export_bytes(info.id))
    assert user.model(again.id).to_learner().to_bytes() == local.to_bytes()


def test_the_q_table_reads_the_same_locally_and_remotely(user):
    local = trained(700, seed=4)
    local.update([0.5, 2.25], 0, 1.0, [0.5, 2.5])
    local.update(-3, 3, -2.0, -4)
    mid = user.import_model(local).id
    remote = user.model(mid)
    items = local.items()
    assert len(items) == len(local) > 20
    assert list(local) == items
    assert ((0.5, 2.25), local.q_values([0.5, 2.25])) in items and ((1, 2), local.q_values([1, 2])) in items
    assert list(user.iter_q_table(mid, page_size=7)) == items
    assert list(remote) == items
    assert remote.items() == items
    assert remote.greedy_policy() == local.greedy_policy()
    assert remote.state_values() == local.state_values()
    for state, q in items:
        assert local.greedy_policy()[state] == q.index(max(q)) and local.state_values()[state] == max(q)
    (ls, lq), (rs, rq) = local.to_numpy(), remote.to_numpy()
    assert ls == rs == [s for s, _ in items] and lq.shape == (len(items), 4)
    assert np.array_equal(lq, rq)
    page = user.status(mid, offset=3, limit=5)
    assert (page.q_table.total, page.q_table.offset, len(page.q_table.rows)) == (len(items), 3, 5)
    assert [(r.state, r.q_values) for r in page.q_table.rows] == items[3:8]

    pd = pytest.importorskip("pandas")
    df, rdf = qlearn.to_dataframe(local), remote.to_dataframe()
    pd.testing.assert_frame_equal(df, rdf)
    assert list(df.columns) == ["n", "s", "w", "e", "value", "greedy_action"]
    assert df.loc["goal", "value"] == max(local.q_values("goal"))


def test_an_empty_table_reads_as_empty(user):
    mid = user.create_model("empty", 3).id
    assert user.model(mid).items() == [] and QLearner(3).items() == []
    states, q = user.model(mid).to_numpy()
    assert states == [] and q.shape == (0, 3) and QLearner(3).to_numpy()[1].shape == (0, 3)


def test_the_event_stream_delivers_updates_made_by_another_client(roomy, user):
    mid = user.create_model("live", 2).id
    key = user.create_api_key("other").key
    with user.events(mid) as stream, qlearn.Client(roomy.base, api_key=key) as other:
        other.update_batch(mid, [{"state": [1, 2], "action": 1, "reward": 1.0, "next_state": [2, 2]},
                                 {"state": "s", "action": 0, "reward": 3.0, "next_state": 1, "done": True}])
        other.update(mid, 7, 1, -1.0, 8)
        events = []
        for ev in stream:
            events.append(ev)
            if len(events) == 3:
                break
    assert [e.state for e in events] == [(1, 2), "s", 7]
    assert [e.updates for e in events] == [1, 2, 3]
    assert isinstance(events[0], qlearn.types.UpdateEvent) and events[0].q_value == pytest.approx(0.1)
    assert events[1].episode_return == 4.0 and events[2].episode_return is None
    with pytest.raises(qlearn.NotFound):
        user.events("no-such-model").open()


# ---- asyncio ---------------------------------------------------------------------------


def test_async_client_has_the_same_methods(roomy):
    sync_names = {n for n in dir(qlearn.Client) if not n.startswith("_")}
    assert sync_names == {n for n in dir(qlearn.AsyncClient) if not n.startswith("_")}

    async def main() -> None:
        async with qlearn.AsyncClient(roomy.base) as c:
            reg = await c.register(email(), PASSWORD)
            assert (await c.me()).id == reg.user.id
            local = trained(300)
            info = await c.import_model(local, name="async")
            assert (await c.export_model(info.id)).to_bytes() == local.to_bytes()
            remote = c.model(info.id)
            assert await remote.items() == local.items()
            assert await remote.greedy_policy() == local.greedy_policy()
            cols = columns(1200, np.random.default_rng(1))
            assert np.array_equal(await c.update_many(info.id, *cols), local.update_many(*cols))
            assert [x async for x in c.iter_q_table(info.id, page_size=9)] == local.items()
            p = await c.predict(info.id, "goal", explore=False)
            assert p.q_values == pytest.approx(local.q_values("goal"))
            with pytest.raises(qlearn.ValidationError) as e:
                await c.update(info.id, "goal", 9, 1.0, 3)
            assert e.value.code == "invalid_action"
            async with c.events(info.id) as stream:
                # two clients at once on one pool: an update while the stream is open
                await asyncio.gather(c.update(info.id, 5, 0, 1.0, 6), c.get_model(info.id))
                async for ev in stream:
                    assert ev.state == 5 and ev.action == 0
                    break
            assert len(await c.list_models()) == 2
            await c.delete_model(info.id)
            with pytest.raises(qlearn.NotFound):
                await c.get_model(info.id)
            board = await c.dashboard()
            assert board.limits.monthly_calls is None and board.usage.calls > 1200

    asyncio.run(main())
