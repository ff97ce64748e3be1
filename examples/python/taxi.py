"""Train a qlearn agent on Gymnasium's Taxi and evaluate its greedy policy.

Taxi (Dietterich 2000): 500 discrete states, 6 actions; -1 a step, +20 for a
delivery, -10 for an illegal pick-up or drop-off; episodes are truncated
after 200 steps. The optimal policy's return averaged over all start states
is about 7.9, so a correct Q-learner's greedy policy should score close to it.

    pip install gymnasium            # ships the environment, nothing to download
    python examples/python/taxi.py [--episodes 6000] [--seed 0] [--mask]

Uses ``Taxi-v4`` (gymnasium >= 1.4) or ``Taxi-v3`` (older releases).
"""

from __future__ import annotations

import argparse
import statistics
import time

import gymnasium as gym

import qlearn


def make_env() -> gym.Env:
    for env_id in ("Taxi-v4", "Taxi-v3"):
        if env_id in gym.registry:
            return gym.make(env_id)
    raise SystemExit("this gymnasium has no Taxi environment")


def train(env: gym.Env, agent: qlearn.QLearner, episodes: int, seed: int, mask: bool) -> list[float]:
    returns = []
    for ep in range(episodes):
        state, info = env.reset(seed=seed + ep)
        done = truncated = False
        total = 0.0
        while not (done or truncated):
            allowed = info["action_mask"].astype(bool) if mask else None
            action = agent.predict(state, allowed_actions=allowed)
            next_state, reward, done, truncated, info = env.step(action)
            agent.update(state, action, reward, next_state, done=done, truncated=truncated,
                         next_allowed_actions=info["action_mask"].astype(bool) if mask else None)
            state = next_state
            total += reward
        returns.append(total)
    return returns


def evaluate(env: gym.Env, agent: qlearn.QLearner, episodes: int, seed: int) -> list[float]:
    returns = []
    for ep in range(episodes):
        state, _ = env.reset(seed=seed + ep)
        done = truncated = False
        total = 0.0
        while not (done or truncated):
            state, reward, done, truncated, _ = env.step(agent.predict(state, explore=False))
            total += reward
        returns.append(total)
    return returns


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=6000, help="training episodes")
    ap.add_argument("--eval-episodes", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mask", action="store_true",
                    help="pass Taxi's action_mask as allowed_actions (learns faster)")
    ap.add_argument("--save", metavar="PATH", help="save the trained model (server import format)")
    args = ap.parse_args()

    env = make_env()
    agent = qlearn.QLearner(
        n_actions=int(env.action_space.n),
        learning_rate=0.5,
        discount_factor=0.99,
        epsilon=1.0,
        epsilon_decay=0.999,
        min_epsilon=0.01,
        seed=args.seed,
        action_names=["south", "north", "east", "west", "pickup", "dropoff"],
    )
    start = time.perf_counter()
    returns = train(env, agent, args.episodes, args.seed, args.mask)
    secs = time.perf_counter() - start
    stats = agent.stats
    print(f"{env.spec.id if env.spec else 'Taxi'}: trained {args.episodes} episodes "
          f"({stats.updates:,} updates, {len(agent)} states) in {secs:.1f} s; "
          f"epsilon now {agent.epsilon:.3f}")
    print(f"mean training return, last 100 episodes: {statistics.fmean(returns[-100:]):.2f}")

    # Evaluation uses start states the training seeds did not.
    scores = evaluate(env, agent, args.eval_episodes, seed=10**6 + args.seed)
    print(f"greedy policy over {args.eval_episodes} evaluation episodes: "
          f"mean return {statistics.fmean(scores):.2f} (min {min(scores):.0f}, max {max(scores):.0f}); "
          f"optimum ~7.9")
    if args.save:
        agent.save(args.save)
        print(f"saved to {args.save}")


if __name__ == "__main__":
    main()
