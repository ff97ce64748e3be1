"""News recommendation with delayed clicks: decisions and delayed rewards.

A simulated news site: each round a reader arrives in one of eight contexts
(a segment, morning or evening); the agent picks one of six articles; the
reader clicks with a probability that depends on both, and the click (if
any) arrives some simulated minutes later, after other readers have come
and gone. The agent never keeps state, action or next state itself: it logs
a decision, and the reward is matched to it later by its decision id.

Two ways to run it:

- in-process (default): ``qlearn.QLearner.enable_decisions`` with a
  simulated clock (``now=`` on every call), a 60-minute reward window and a
  default reward of 0: a reader who does not click within the window
  teaches "no click" when ``settle`` closes the window;
- through the service (``--url``): ``qlearn.Client`` on a model whose
  ``decisions`` setting is on; ``predict`` returns the ``decision_id``, a
  click is posted with ``reward(..., final=True)`` when it arrives, and a
  reader who leaves without clicking gets an explicit ``0`` (final) when
  the simulated window passes (the service's deadline is in real time).

It prints the click rate of each block of rounds (rising as it learns) and,
at the end, the learned article for each context next to the best one.

    python examples/python/news_recommendation.py --rounds 20000
    python examples/python/news_recommendation.py --url http://127.0.0.1:8000 \\
        --email you@example.com --password '...' --rounds 4000   # or QLEARN_API_KEY=...

Through the service every round is two metered calls (a logging predict and
a reward): use a server whose tier allows it (see taxi_service.py).
"""

from __future__ import annotations

import argparse
import heapq
import os
import random
from typing import Any, Protocol

import qlearn

SEGMENTS = ["sports", "tech", "politics", "culture"]
TIMES = ["morning", "evening"]
CONTEXTS = [f"{s}/{t}" for s in SEGMENTS for t in TIMES]
ARTICLES = ["match report", "phone review", "election poll", "film festival", "weather", "celebrity"]

#: The agent: a contextual bandit (each decision a one-step episode, so no
#: discount), exploring a lot at first; epsilon decays at each learned
#: decision.
PARAMS: dict[str, Any] = dict(learning_rate=0.05, discount_factor=0.0, epsilon=0.5,
                              epsilon_decay=0.9995, min_epsilon=0.02)

#: Minutes a reader has to click (the reward window).
WINDOW_MINUTES = 60
#: Simulated minutes between two readers.
MINUTES_PER_ROUND = 0.5


def click_probability(context: str, article: int) -> float:
    """The simulated readers: each segment prefers its own article (more so
    in the evening), everybody clicks the weather a little in the morning,
    and the celebrity story is mildly popular everywhere."""
    segment, time = context.split("/")
    favourite = SEGMENTS.index(segment)
    if article == favourite:
        return 0.55 if time == "evening" else 0.45
    if article == 4:
        return 0.25 if time == "morning" else 0.05
    if article == 5:
        return 0.15
    return 0.03


def best_article(context: str) -> int:
    return max(range(len(ARTICLES)), key=lambda a: click_probability(context, a))


class Recommender(Protocol):
    def decide(self, context: str, minute: float) -> tuple[str, int]: ...
    def reward(self, decision_id: str, value: float, minute: float) -> None: ...
    def settle(self, minute: float) -> None: ...
    def q_values(self, context: str) -> list[float]: ...


class InProcess:
    """``QLearner`` with decisions on and the simulated clock passed in."""

    def __init__(self, seed: int) -> None:
        self.agent = qlearn.QLearner(n_actions=len(ARTICLES), seed=seed, action_names=ARTICLES, **PARAMS)
        self.agent.enable_decisions(reward_wait_seconds=WINDOW_MINUTES * 60, default_reward=0.0)
        self.t0 = 1_700_000_000.0

    def _now(self, minute: float) -> float:
        return self.t0 + minute * 60.0

    def decide(self, context: str, minute: float) -> tuple[str, int]:
        d = self.agent.decide(context, now=self._now(minute))
        return d.decision_id, d.action

    def reward(self, decision_id: str, value: float, minute: float) -> None:
        self.agent.reward(decision_id, value, final=True, now=self._now(minute))

    def settle(self, minute: float) -> None:
        # No-clicks close here with the default reward 0.
        self.agent.settle(now=self._now(minute))

    def q_values(self, context: str) -> list[float]:
        return self.agent.q_values(context)


class Service:
    """A hosted model through ``qlearn.Client``. The service's deadlines run
    on real time, so a reader who leaves without clicking is told
    explicitly: reward 0, final, when the simulated window passes."""

    def __init__(self, client: qlearn.Client, seed: int) -> None:
        self.client = client
        self.model_id = client.create_model(
            "news-recommendation", len(ARTICLES), seed=seed, action_names=ARTICLES, **PARAMS).id
        client.patch_model(self.model_id, decisions={"reward_wait_seconds": 3600, "default_reward": None})
        self.decisions = 0

    def decide(self, context: str, minute: float) -> tuple[str, int]:
        # Our own decision id makes the call safe to repeat: the client
        # retries it after a 429 rate_limited (the server answers a retry
        # with the decision it logged, metered once).
        self.decisions += 1
        p = self.client.predict(self.model_id, context, decision_id=f"news-{self.decisions}")
        if p.decision_id is None:
            raise RuntimeError("the model does not log decisions")
        return p.decision_id, p.action

    def reward(self, decision_id: str, value: float, minute: float) -> None:
        self.client.reward(self.model_id, decision_id, value, reward_id="outcome", final=True)

    def settle(self, minute: float) -> None:
        pass  # every decision gets an explicit final reward

    def q_values(self, context: str) -> list[float]:
        return self.client.model(self.model_id).to_learner().q_values(context)


def simulate(rec: Recommender, rounds: int, block: int, seed: int, explicit_no_click: bool) -> list[float]:
    """Runs the loop; returns the click rate of each block of rounds."""
    rng = random.Random(seed)
    # (minute it arrives, order, decision id, reward): clicks, and with
    # explicit_no_click the zeros of readers who left.
    pending: list[tuple[float, int, str, float]] = []
    rates, clicks = [], 0
    for i in range(rounds):
        minute = i * MINUTES_PER_ROUND
        while pending and pending[0][0] <= minute:
            _, _, did, value = heapq.heappop(pending)
            rec.reward(did, value, minute)
        rec.settle(minute)
        context = rng.choice(CONTEXTS)
        did, article = rec.decide(context, minute)
        if rng.random() < click_probability(context, article):
            clicks += 1
            # The click comes 1 to 45 minutes later (inside the window).
            heapq.heappush(pending, (minute + rng.uniform(1, 45), i, did, 1.0))
        elif explicit_no_click:
            heapq.heappush(pending, (minute + WINDOW_MINUTES - 1, i, did, 0.0))
        if (i + 1) % block == 0:
            rates.append(clicks / block)
            clicks = 0
    return rates


def main(argv: Any = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=20_000)
    ap.add_argument("--block", type=int, default=0, help="rounds per printed block (default rounds/10)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--url", help="learn through this qlearn service instead of in-process")
    ap.add_argument("--email")
    ap.add_argument("--password")
    args = ap.parse_args(argv)
    block = args.block or max(1, args.rounds // 10)

    if args.url:
        client = qlearn.Client(args.url, api_key=os.environ.get("QLEARN_API_KEY"))
        if not os.environ.get("QLEARN_API_KEY"):
            if not (args.email and args.password):
                ap.error("--url needs --email and --password (or QLEARN_API_KEY)")
            try:
                client.register(args.email, args.password)
            except qlearn.Conflict:
                client.login(args.email, args.password)
        rec: Recommender = Service(client, args.seed)
        where = f"through the service at {args.url}"
    else:
        rec = InProcess(args.seed)
        where = "in-process"

    print(f"news recommendation {where}: {len(CONTEXTS)} contexts, {len(ARTICLES)} articles, "
          f"clicks arrive 1-45 simulated minutes later")
    rates = simulate(rec, args.rounds, block, args.seed, explicit_no_click=bool(args.url))
    for k, r in enumerate(rates):
        print(f"rounds {k * block + 1:>6}-{(k + 1) * block:<6} click rate {r:.3f}")
    best = sum(max(click_probability(c, a) for a in range(len(ARTICLES))) for c in CONTEXTS) / len(CONTEXTS)
    print(f"best possible click rate {best:.3f} (greedy), random {sum(click_probability(c, a) for c in CONTEXTS for a in range(len(ARTICLES))) / (len(CONTEXTS) * len(ARTICLES)):.3f}")
    right = 0
    for c in CONTEXTS:
        q = rec.q_values(c)
        learned = max(range(len(ARTICLES)), key=lambda a: q[a])
        right += learned == best_article(c)
        print(f"  {c:<17} learned {ARTICLES[learned]!r:<16} best {ARTICLES[best_article(c)]!r:<16} "
              f"Q={q[learned]:.2f}")
    print(f"learned the best article for {right} of {len(CONTEXTS)} contexts; "
          f"click rate first block {rates[0]:.3f}, last block {rates[-1]:.3f}")


if __name__ == "__main__":
    main()
