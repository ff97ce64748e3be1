"""Throughput of qlearn against the two usual pure-Python Q-learning loops.

One workload for every contender: a 100x100 gridworld stepped in Python
(start in the top-left corner, goal in the bottom-right, reward -1 a step,
episodes truncated after 1,000 steps), 4 actions, epsilon-greedy with
epsilon 0.1, alpha 0.1, gamma 0.95. Each contender runs the same loop:
choose an action, step the environment, learn from the transition.

* ``dict``: a dict of lists as the Q-table (the usual tutorial loop).
* ``numpy``: a ``np.zeros((10000, 4))`` Q-table, ``Q[s, a] += ...``.
* ``qlearn``: ``agent.predict`` + ``agent.update``.
* ``qlearn.update_many``: experiences/s of one batch call over arrays of
  recorded transitions (no environment).

Run: ``python examples/python/bench.py [--steps N] [--batch N] [--repeat R]
[--clock cpu|wall]``; prints Markdown tables (best of R runs for each
contender, process CPU time unless ``--clock wall``).
"""

from __future__ import annotations

import argparse
import platform
import random
import time

import numpy as np

import qlearn

SIDE = 100
N_STATES = SIDE * SIDE
N_ACTIONS = 4
GOAL = N_STATES - 1
MAX_STEPS = 1000
ALPHA, GAMMA, EPSILON = 0.1, 0.95, 0.1


def transition_table() -> list[list[int]]:
    """NEXT[s][a]: the gridworld's moves (up, down, left, right; walls stop you)."""
    table = []
    for s in range(N_STATES):
        r, c = divmod(s, SIDE)
        table.append([max(r - 1, 0) * SIDE + c, min(r + 1, SIDE - 1) * SIDE + c,
                      r * SIDE + max(c - 1, 0), r * SIDE + min(c + 1, SIDE - 1)])
    return table


NEXT = transition_table()

#: The clock every measurement uses: CPU time of this process by default
#: (robust on a shared machine, where wall time also counts the time other
#: processes hold the CPU); `--clock wall` switches to wall time.
clock = time.process_time

# Every loop below is the same episode loop: start at 0, step with
# `s2 = nxt[s][a]` (reward -1, done at the goal), truncate after MAX_STEPS.
# Only the agent's part differs.


def run_env_only(steps: int, seed: int) -> float:
    """The loop with a fixed cyclic policy and no learning: the environment's share."""
    nxt = NEXT
    s, t = 0, 0
    start = clock()
    for i in range(steps):
        a = i & 3
        s2 = nxt[s][a]
        r = -1.0
        done = s2 == GOAL
        t += 1
        if done or t == MAX_STEPS:
            s, t = 0, 0
        else:
            s = s2
    return clock() - start


def run_dict(steps: int, seed: int) -> float:
    rng = random.Random(seed)
    rand, randrange = rng.random, rng.randrange
    nxt = NEXT
    Q: dict[int, list[float]] = {}
    s, t = 0, 0
    start = clock()
    for _ in range(steps):
        q = Q.get(s)
        if q is None:
            q = Q[s] = [0.0] * N_ACTIONS
        if rand() < EPSILON:
            a = randrange(N_ACTIONS)
        else:
            a = q.index(max(q))
        s2 = nxt[s][a]
        r = -1.0
        done = s2 == GOAL
        t += 1
        q2 = Q.get(s2)
        best = 0.0 if done or q2 is None else max(q2)
        q[a] += ALPHA * (r + GAMMA * best - q[a])
        if done or t == MAX_STEPS:
            s, t = 0, 0
        else:
            s = s2
    return clock() - start


def run_numpy(steps: int, seed: int) -> float:
    rng = random.Random(seed)
    rand, randrange = rng.random, rng.randrange
    nxt = NEXT
    Q = np.zeros((N_STATES, N_ACTIONS))
    argmax = np.argmax
    s, t = 0, 0
    start = clock()
    for _ in range(steps):
        if rand() < EPSILON:
            a = randrange(N_ACTIONS)
        else:
            a = int(argmax(Q[s]))
        s2 = nxt[s][a]
        r = -1.0
        done = s2 == GOAL
        t += 1
        best = 0.0 if done else Q[s2].max()
        Q[s, a] += ALPHA * (r + GAMMA * best - Q[s, a])
        if done or t == MAX_STEPS:
            s, t = 0, 0
        else:
            s = s2
    return clock() - start


def run_qlearn(steps: int, seed: int) -> float:
    agent = qlearn.QLearner(
        N_ACTIONS, learning_rate=ALPHA, discount_factor=GAMMA, epsilon=EPSILON, seed=seed
    )
    predict, update = agent.predict, agent.update
    nxt = NEXT
    s, t = 0, 0
    start = clock()
    for _ in range(steps):
        a = predict(s)
        s2 = nxt[s][a]
        r = -1.0
        done = s2 == GOAL
        t += 1
        truncated = t == MAX_STEPS
        update(s, a, r, s2, done, truncated)
        if done or truncated:
            s, t = 0, 0
        else:
            s = s2
    return clock() - start


def trajectories(n: int, seed: int) -> tuple[np.ndarray, ...]:
    """n transitions of random-walk episodes in the gridworld, in episode
    order (as a rollout or a replay of one records them); computed with numpy
    by 1,000 walkers stepping together, each walker's steps kept contiguous."""
    rng = np.random.default_rng(seed)
    walkers = 1000
    length = -(-n // walkers)
    table = np.array(NEXT)
    s = np.zeros((walkers, length), dtype=np.int64)
    a = rng.integers(0, N_ACTIONS, (walkers, length))
    s2 = np.empty_like(s)
    cur = rng.integers(0, N_STATES, walkers)
    for t in range(length):
        s[:, t] = cur
        s2[:, t] = table[cur, a[:, t]]
        cur = np.where(s2[:, t] == GOAL, 0, s2[:, t])
    s, a, s2 = (x.reshape(-1)[:n] for x in (s, a, s2))
    return s, a, np.full(n, -1.0), s2, s2 == GOAL


def uniform(n: int, seed: int) -> tuple[np.ndarray, ...]:
    """n transitions from uniformly random states (a shuffled replay buffer)."""
    rng = np.random.default_rng(seed)
    s = rng.integers(0, N_STATES, n)
    a = rng.integers(0, N_ACTIONS, n)
    s2 = np.array(NEXT)[s, a]
    return s, a, np.full(n, -1.0), s2, s2 == GOAL


def run_update_many(batch: tuple[np.ndarray, ...], seed: int) -> float:
    agent = qlearn.QLearner(
        N_ACTIONS, learning_rate=ALPHA, discount_factor=GAMMA, epsilon=EPSILON, seed=seed
    )
    start = clock()
    agent.update_many(*batch)
    return clock() - start


def run_predict_many(batch: tuple[np.ndarray, ...], seed: int) -> float:
    agent = qlearn.QLearner(
        N_ACTIONS, learning_rate=ALPHA, discount_factor=GAMMA, epsilon=EPSILON, seed=seed
    )
    agent.update_many(*batch)
    start = clock()
    agent.predict_many(batch[0])
    return clock() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1_000_000, help="steps per loop run")
    ap.add_argument("--batch", type=int, default=5_000_000, help="experiences per update_many")
    ap.add_argument("--repeat", type=int, default=3, help="runs per contender (the best is kept)")
    ap.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                    help="process CPU time (default) or wall time")
    args = ap.parse_args()
    global clock
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    steps, n, rep = args.steps, args.batch, args.repeat

    def best(fn, *fn_args) -> float:
        return min(fn(*fn_args, seed) for seed in range(rep))

    env = best(run_env_only, steps)
    d = best(run_dict, steps)
    q = best(run_qlearn, steps)
    np_steps = max(steps // 10, 1)  # the numpy loop is slow: a tenth of the steps
    npy = best(run_numpy, np_steps) * steps / np_steps
    traj, unif = trajectories(n, 0), uniform(n, 0)
    um_traj = best(run_update_many, traj)
    um_unif = best(run_update_many, unif)
    pm = best(run_predict_many, unif)

    print(f"Python {platform.python_version()}, numpy {np.__version__}, qlearn {qlearn.__version__}, "
          f"{platform.machine()}; {steps:,} steps per run, best of {rep} runs, {args.clock} time")
    print()
    print("| loop (100x100 gridworld, epsilon 0.1) | µs / step | steps / s | qlearn is |")
    print("| --- | ---: | ---: | ---: |")
    rows = [("environment alone (no agent)", env), ("dict Q-table", d),
            ("numpy Q-table `Q[s, a] += ...`", npy), ("qlearn `predict` + `update`", q)]
    for name, secs in rows:
        per = secs / steps
        ratio = "" if name.startswith("environment") else f"{secs / q:.2f}x faster" if secs > q else "1x"
        print(f"| {name} | {per * 1e6:.3f} | {1 / per:,.0f} | {ratio} |")
    print()
    print("| batch call | items | ms | million items / s |")
    print("| --- | ---: | ---: | ---: |")
    for name, secs in [("`update_many`, episode-ordered transitions", um_traj),
                       ("`update_many`, uniformly random transitions", um_unif),
                       ("`predict_many`, uniformly random states", pm)]:
        print(f"| {name} | {n:,} | {secs * 1e3:.0f} | {n / secs / 1e6:.1f} |")


if __name__ == "__main__":
    main()
