//! Cliff walking (Sutton & Barto, "Reinforcement Learning", example 6.6), the
//! one copy of the environment and its training loop: the runnable example
//! (`examples/examples/cliff_walking.rs`) prints what it learns and the
//! engine's textbook test (`qlearn-core/tests/cliff_walking.rs`) checks it;
//! both include this file (`#[path]`), so they cannot drift apart.
//!
//! A 4x12 grid. The agent starts at the bottom left and must reach the
//! bottom right. Every step costs -1; stepping into the cliff between them
//! costs -100 and sends the agent back to the start. With epsilon-greedy
//! exploration (0.1), Q-learning learns the optimal path right along the
//! cliff edge (13 steps); SARSA, which learns the value of the policy it
//! follows (exploration included), learns a longer safe path.

#![allow(dead_code)] // each includer uses its own part

use qlearn_core::{Algorithm, Experience, Model, ModelConfig};

/// Grid rows.
pub const ROWS: i64 = 4;
/// Grid columns.
pub const COLS: i64 = 12;
/// Where every episode starts (bottom left).
pub const START: (i64, i64) = (3, 0);
/// The goal (bottom right).
pub const GOAL: (i64, i64) = (3, 11);
/// Training episodes: alpha 0.5 as in the book for the first half, then
/// 0.05 so that the estimates settle.
pub const EPISODES: usize = 1000;
/// Up, right, down, left.
pub const MOVES: [(i64, i64); 4] = [(-1, 0), (0, 1), (1, 0), (0, -1)];

/// Whether a cell is part of the cliff.
pub fn is_cliff((r, c): (i64, i64)) -> bool {
    r == 3 && (1..=10).contains(&c)
}

/// One move: the next cell, the reward, and whether the episode ended.
pub fn step(pos: (i64, i64), action: usize) -> ((i64, i64), f64, bool) {
    let (dr, dc) = MOVES[action];
    let next = (
        (pos.0 + dr).clamp(0, ROWS - 1),
        (pos.1 + dc).clamp(0, COLS - 1),
    );
    if is_cliff(next) {
        (START, -100.0, false)
    } else {
        (next, -1.0, next == GOAL)
    }
}

/// The state is the cell's index, an integer.
pub fn state((r, c): (i64, i64)) -> i64 {
    r * COLS + c
}

/// Trains a model (epsilon 0.1, undiscounted, seeded) and returns it with the
/// return of each episode.
pub fn train(algorithm: Algorithm, seed: u64) -> (Model, Vec<f64>) {
    let mut config = ModelConfig::new(4);
    config.algorithm = algorithm;
    config.learning_rate = 0.5;
    config.discount_factor = 1.0;
    config.epsilon = 0.1;
    config.seed = Some(seed);
    let mut model = Model::new(config).expect("valid configuration");
    let mut returns = Vec::with_capacity(EPISODES);
    for episode in 0..EPISODES {
        if episode == EPISODES / 2 {
            // Let the estimates settle: a smaller step size for the second half.
            let mut settled = model.config().clone();
            settled.learning_rate = 0.05;
            model.reconfigure(settled).expect("valid configuration");
        }
        let mut pos = START;
        let mut action = model
            .predict(state(pos), true, None)
            .expect("valid state")
            .action;
        for _ in 0..10_000 {
            let (next, reward, done) = step(pos, action);
            // SARSA learns from the action it will really take next, so pick
            // it first (Q-learning ignores it).
            let next_action = model
                .predict(state(next), true, None)
                .expect("valid state")
                .action;
            let exp = Experience::new(state(pos), action, reward, state(next))
                .done(done)
                .next_action(next_action);
            let outcome = model.update(&exp).expect("valid experience");
            if let Some(total) = outcome.episode_return {
                returns.push(total);
                break;
            }
            (pos, action) = (next, next_action);
        }
    }
    (model, returns)
}

/// The greedy path from the start (at most 100 moves), as (cell, action)
/// pairs; it reached the goal if the last pair's move lands there.
pub fn greedy_path(model: &mut Model) -> Vec<((i64, i64), usize)> {
    let mut path = vec![];
    let mut pos = START;
    while pos != GOAL && path.len() < 100 {
        let a = model
            .predict(state(pos), false, None)
            .expect("valid state")
            .action;
        path.push((pos, a));
        pos = step(pos, a).0;
    }
    path
}
