//! Cliff walking (Sutton & Barto, "Reinforcement Learning", example 6.6).
//!
//! A 4x12 grid. The agent starts at S (bottom left) and must reach G (bottom
//! right). Every step costs -1; stepping into the cliff C costs -100 and
//! sends the agent back to S. With epsilon-greedy exploration (epsilon 0.1),
//! Q-learning learns the optimal path right along the cliff edge (13 steps),
//! while SARSA, which learns the value of the policy it actually follows
//! (exploration included), learns the longer safe path away from the edge.
//!
//! Run: `cargo run --release --example cliff_walking [-- SEED]`

use qlearn_core::{Algorithm, Experience, Model, ModelConfig};

const ROWS: i64 = 4;
const COLS: i64 = 12;
const START: (i64, i64) = (3, 0);
const GOAL: (i64, i64) = (3, 11);
const EPISODES: usize = 1000;
/// Up, right, down, left.
const MOVES: [(i64, i64); 4] = [(-1, 0), (0, 1), (1, 0), (0, -1)];
const ARROWS: [char; 4] = ['↑', '→', '↓', '←'];

fn is_cliff((r, c): (i64, i64)) -> bool {
    r == 3 && (1..=10).contains(&c)
}

/// One move: the next cell, the reward, and whether the episode ended.
fn step(pos: (i64, i64), action: usize) -> ((i64, i64), f64, bool) {
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
fn state((r, c): (i64, i64)) -> i64 {
    r * COLS + c
}

/// Trains a model and returns it with the return of each episode.
fn train(algorithm: Algorithm, seed: u64) -> (Model, Vec<f64>) {
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
        let mut action = model.predict(state(pos), true, None).unwrap().action;
        loop {
            let (next, reward, done) = step(pos, action);
            // SARSA learns from the action it will really take next, so pick
            // it first (Q-learning ignores it).
            let next_action = model.predict(state(next), true, None).unwrap().action;
            let exp = Experience::new(state(pos), action, reward, state(next))
                .done(done)
                .next_action(next_action);
            let outcome = model.update(&exp).unwrap();
            if let Some(total) = outcome.episode_return {
                returns.push(total);
                break;
            }
            (pos, action) = (next, next_action);
        }
    }
    (model, returns)
}

/// The greedy path from S (at most 100 moves), as (cell, action) pairs.
fn greedy_path(model: &mut Model) -> Vec<((i64, i64), usize)> {
    let mut path = vec![];
    let mut pos = START;
    while pos != GOAL && path.len() < 100 {
        let a = model.predict(state(pos), false, None).unwrap().action;
        path.push((pos, a));
        pos = step(pos, a).0;
    }
    path
}

fn print_path(path: &[((i64, i64), usize)]) {
    for r in 0..ROWS {
        let line: String = (0..COLS)
            .map(|c| {
                let cell = (r, c);
                match path.iter().find(|(p, _)| *p == cell) {
                    Some((_, a)) => ARROWS[*a],
                    None if cell == GOAL => 'G',
                    None if is_cliff(cell) => 'C',
                    None => '·',
                }
            })
            .flat_map(|ch| [' ', ch])
            .collect();
        println!("   {line}");
    }
}

fn main() {
    let seed = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    println!("Cliff walking, {EPISODES} episodes, alpha 0.5 then 0.05, epsilon 0.1, seed {seed}");
    println!("Start: bottom left (where the path begins), C: cliff, G: goal.");
    for (name, algorithm) in [
        ("Q-learning", Algorithm::QLearning),
        ("SARSA", Algorithm::Sarsa),
    ] {
        let (mut model, returns) = train(algorithm, seed);
        let path = greedy_path(&mut model);
        let last: &[f64] = &returns[returns.len() - 100..];
        let mean = last.iter().sum::<f64>() / last.len() as f64;
        let reached = step(path.last().unwrap().0, path.last().unwrap().1).0 == GOAL;
        println!();
        println!(
            "{name}: greedy path of {} steps{}; mean return of the last 100 training episodes {mean:.1}",
            path.len(),
            if reached { "" } else { " (does not reach G!)" }
        );
        print_path(&path);
    }
    println!();
    println!("Q-learning walks the edge (optimal once exploration stops, but it falls");
    println!("while exploring); SARSA keeps away from it and earns more while learning.");
}
