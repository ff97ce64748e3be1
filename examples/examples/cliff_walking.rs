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

use qlearn_core::Algorithm;

#[path = "../envs/cliff_walking.rs"]
mod cliff;
use cliff::{greedy_path, is_cliff, step, train, COLS, EPISODES, GOAL, ROWS};

const ARROWS: [char; 4] = ['↑', '→', '↓', '←'];

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
