"""Batch updates from numpy through qlearn.Client, next to the same through raw httpx.

Workload: N recorded transitions of a 100x100 gridworld (array states
``[row, col]``, 4 actions, reward -1, episodes of random walks), sent as
``POST /update/batch`` calls of 1,000 experiences to a fresh model:

- ``qlearn.Client.update_many(model_id, states, actions, rewards, next_states, dones)``;
- raw httpx: the loop a user writes by hand (numpy columns -> ``tolist()``
  -> a list of experience dicts -> ``httpx.Client.post(json=...)``, one
  connection kept alive), the same requests;
- for scale, the in-process ``QLearner.update_many`` of the same batch (no HTTP).

    python examples/python/bench_client.py --url http://127.0.0.1:8000 [--experiences 200000]

Needs a tier without a monthly quota and with room in its rate limit (every
experience is a metered call), e.g. a local server started with a
LIMITS_FILE of ``{"free": {"monthly_calls": null, "max_models": null,
"rate_per_second": 1000, "burst": 1000}}``. Registers a throwaway account
unless QLEARN_API_KEY is set. Times: wall-clock (client + network +
server) and the CPU time of the client process alone (what the client
library costs, robust to load on a shared machine), each the best of
``--repeat`` rounds that run every contender in turn.
"""

from __future__ import annotations

import argparse
import os
import secrets
import time
from collections.abc import Callable

import httpx
import numpy as np

import qlearn

BATCH = 1000
SIDE = 100


def transitions(n: int, seed: int) -> tuple[np.ndarray, ...]:
    """Random-walk rollouts of the gridworld, as numpy columns."""
    rng = np.random.default_rng(seed)
    moves = np.array([[-1, 0], [1, 0], [0, -1], [0, 1]])
    actions = rng.integers(0, 4, size=n)
    states = np.empty((n, 2), dtype=np.int64)
    pos = np.zeros(2, dtype=np.int64)
    for i in range(n):
        states[i] = pos
        pos = np.clip(pos + moves[actions[i]], 0, SIDE - 1)
    next_states = np.vstack([states[1:], pos[None, :]])
    dones = (next_states == SIDE - 1).all(axis=1)
    return states, actions, np.full(n, -1.0), next_states, dones


def via_client(client: qlearn.Client, mid: str, batch: tuple[np.ndarray, ...]) -> None:
    td = client.update_many(mid, *batch, batch_size=BATCH)
    assert len(td) == len(batch[0])


def via_httpx(http: httpx.Client, mid: str, batch: tuple[np.ndarray, ...]) -> None:
    states, actions, rewards, next_states, dones = batch
    for i in range(0, len(states), BATCH):
        j = i + BATCH
        exps = [{"state": s, "action": a, "reward": r, "next_state": s2, "done": d}
                for s, a, r, s2, d in zip(states[i:j].tolist(), actions[i:j].tolist(), rewards[i:j].tolist(),
                                          next_states[i:j].tolist(), dones[i:j].tolist())]
        r = http.post("/update/batch", json={"model_id": mid, "experiences": exps})
        r.raise_for_status()
        assert len(r.json()["results"]) == len(exps)


def timed(fn: Callable[[], None]) -> tuple[float, float]:
    """Wall seconds, and CPU seconds of this (the client's) process."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def interleaved(repeat: int,
                contenders: dict[str, Callable[[], tuple[float, float]]]) -> dict[str, tuple[float, float]]:
    """Best wall and best CPU time of each contender over ``repeat`` rounds;
    every round runs them all, in turn (alternating the order), so drifting
    load hits all alike."""
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in contenders}
    for r in range(repeat):
        for name in (list(contenders) if r % 2 == 0 else list(reversed(contenders))):
            times[name].append(contenders[name]())
    return {name: (min(w for w, _ in t), min(c for _, c in t)) for name, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default=os.environ.get("QLEARN_URL", "http://127.0.0.1:8000"))
    ap.add_argument("--experiences", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=5, help="rounds (the best time of each is kept)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    batch = transitions(args.experiences, args.seed)
    key = os.environ.get("QLEARN_API_KEY")
    with qlearn.Client(args.url, api_key=key) as client:
        if key is None:
            client.register(f"bench-{secrets.token_hex(6)}@example.com", secrets.token_urlsafe(18))
        token = client._secret  # the raw loop authenticates as the same user

        def remote(send: Callable[[str], None]) -> Callable[[], tuple[float, float]]:
            def run() -> tuple[float, float]:  # a fresh model each time (not timed), deleted after
                mid = client.create_model("bench", 4, learning_rate=0.1, discount_factor=0.95).id
                try:
                    return timed(lambda: send(mid))
                finally:
                    client.delete_model(mid)
            return run

        def local() -> tuple[float, float]:
            agent = qlearn.QLearner(4, learning_rate=0.1, discount_factor=0.95)
            return timed(lambda: agent.update_many(*batch))

        with httpx.Client(base_url=args.url, headers={"Authorization": f"Bearer {token}"},
                          timeout=60) as http:
            best = interleaved(args.repeat, {
                "qlearn.Client.update_many": remote(lambda mid: via_client(client, mid, batch)),
                "raw httpx (tolist + dicts + post)": remote(lambda mid: via_httpx(http, mid, batch)),
                "in-process QLearner.update_many (no HTTP)": local,
            })

    n = args.experiences
    print(f"{n:,} experiences in batches of {BATCH:,} to {args.url}, best of {args.repeat}")
    print(f"{'path':<44} {'wall s':>8} {'experiences/s':>14} {'client CPU s':>13}")
    for name, (wall, cpu) in best.items():
        print(f"{name:<44} {wall:>8.3f} {n / wall:>14,.0f} {cpu:>13.3f}")


if __name__ == "__main__":
    main()
