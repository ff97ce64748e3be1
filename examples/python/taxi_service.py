"""Train Taxi in-process, serve the model from the qlearn service, pull it back.

1. trains a ``qlearn.QLearner`` on Gymnasium's Taxi locally (taxi.py's loop);
2. uploads it (``client.import_model``: the shared binary format);
3. evaluates its greedy policy *through the service*: the evaluation loop is
   taxi.py's ``evaluate``, handed ``client.model(id)``, whose ``predict``
   has QLearner's signature, so every action comes from ``POST /predict``;
4. downloads it again (``client.export_model``) and checks that every
   Q-value is identical to the local one.

    pip install 'qlearn[client]' gymnasium
    python examples/python/taxi_service.py --url http://127.0.0.1:8000 \\
        --email you@example.com --password '...'      # or QLEARN_API_KEY=...

The evaluation makes one metered call per step (about 13 per episode): the
free tier (100 calls a month, 5 requests/s) allows ``--eval-episodes 5``; a
refused call (429) is waited out as its ``Retry-After`` says. A local server
with the free tier lifted: a LIMITS_FILE of
``{"free": {"monthly_calls": null, "max_models": null, "rate_per_second": 1000, "burst": 1000}}``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

import numpy as np
from taxi import evaluate, make_env, train

import qlearn


class Patient:
    """A hosted model whose predict waits out a 429 ``rate_limited`` (the
    client never retries a predict by itself: it is not idempotent; a
    rate-limited request was refused before it ran, so sending it again is
    safe)."""

    def __init__(self, model: qlearn.RemoteModel) -> None:
        self.model = model
        self.calls = 0

    def predict(self, state: Any, explore: bool = True) -> int:
        while True:
            try:
                self.calls += 1
                return self.model.predict(state, explore=explore)
            except qlearn.RateLimited as e:
                time.sleep(e.retry_after or 1.0)


def connect(args: argparse.Namespace) -> qlearn.Client:
    key = os.environ.get("QLEARN_API_KEY")
    if key:
        return qlearn.Client(args.url, api_key=key)
    if not (args.email and args.password):
        raise SystemExit("give --email and --password, or set QLEARN_API_KEY")
    client = qlearn.Client(args.url)
    try:
        client.login(args.email, args.password)
    except qlearn.Unauthorized:
        client.register(args.email, args.password)
        print(f"registered {args.email}")
    return client


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default=os.environ.get("QLEARN_URL", "http://127.0.0.1:8000"))
    ap.add_argument("--email")
    ap.add_argument("--password")
    ap.add_argument("--episodes", type=int, default=6000, help="training episodes (in-process)")
    ap.add_argument("--eval-episodes", type=int, default=50, help="evaluation episodes (through the service)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", action="store_true", help="keep the uploaded model (default: delete it)")
    args = ap.parse_args()

    env = make_env()
    agent = qlearn.QLearner(n_actions=int(env.action_space.n), learning_rate=0.5, discount_factor=0.99,
                            epsilon=1.0, epsilon_decay=0.999, min_epsilon=0.01, seed=args.seed,
                            action_names=["south", "north", "east", "west", "pickup", "dropoff"])
    start = time.perf_counter()
    train(env, agent, args.episodes, args.seed, mask=False)
    print(f"trained {args.episodes} episodes in-process ({agent.stats.updates:,} updates, "
          f"{len(agent)} states) in {time.perf_counter() - start:.1f} s")

    with connect(args) as client:
        info = client.import_model(agent, name="taxi")
        print(f"uploaded as model {info.id} ({info.stats.states} states, {info.stats.updates:,} updates)")

        remote = Patient(client.model(info.id))
        start = time.perf_counter()
        served = evaluate(env, remote, args.eval_episodes, seed=10**6 + args.seed)
        secs = time.perf_counter() - start
        print(f"greedy policy through the service, {args.eval_episodes} episodes: mean return "
              f"{statistics.fmean(served):.2f} ({remote.calls} predict calls in {secs:.1f} s)")
        # The upload carried the random generator's state too: the same
        # episodes in-process break ties identically and score the same.
        local = evaluate(env, agent, args.eval_episodes, seed=10**6 + args.seed)
        print(f"the same episodes in-process: mean return {statistics.fmean(local):.2f} "
              f"(identical: {local == served})")

        back = client.export_model(info.id)
        states, q = agent.to_numpy()
        back_states, back_q = back.to_numpy()
        identical = states == back_states and np.array_equal(q, back_q)
        print(f"downloaded again: {len(back)} states, Q-values identical to the local ones: {identical} "
              f"(the service counted {back.stats.predictions - info.stats.predictions} predictions)")
        if not args.keep:
            client.delete_model(info.id)
        if not identical:
            raise SystemExit("the downloaded Q-table differs from the uploaded one")


if __name__ == "__main__":
    main()
