//! Textbook correctness: Sutton & Barto's cliff walking (example 6.6).
//!
//! 4x12 grid, start bottom left, goal bottom right, -1 per step, -100 and
//! back to the start for stepping into the cliff between them. Trained with
//! epsilon-greedy (0.1), Q-learning's greedy policy is the optimal 13-step
//! path along the cliff edge; SARSA's is a safe path that keeps away from
//! the edge (alpha 0.5 as in the book for 500 episodes, then 0.05 for 500
//! more so that the estimates settle). The environment is
//! `examples/envs/cliff_walking.rs`, which the runnable example prints from.

use qlearn_core::{Algorithm, Model};

// The environment and training loop, shared with the runnable example.
#[path = "../../examples/envs/cliff_walking.rs"]
mod cliff;
use cliff::{step, train, GOAL, START};

/// The cells the greedy policy visits from the start, up to the goal
/// (`None` if it does not get there in 100 moves).
fn greedy_path(model: &mut Model) -> Option<Vec<(i64, i64)>> {
    let pairs = cliff::greedy_path(model);
    let &(last, a) = pairs.last()?;
    (step(last, a).0 == GOAL).then(|| {
        let mut cells: Vec<_> = pairs.iter().map(|&(c, _)| c).collect();
        cells.push(GOAL);
        cells
    })
}

#[test]
fn q_learning_learns_the_optimal_path_along_the_cliff() {
    for seed in [1, 2, 3] {
        let path = greedy_path(&mut train(Algorithm::QLearning, seed).0)
            .unwrap_or_else(|| panic!("seed {seed}: the greedy policy never reaches the goal"));
        // Up, eleven times right along the edge, down: 13 moves.
        let mut optimal = vec![START];
        optimal.extend((0..12).map(|c| (2, c)));
        optimal.push(GOAL);
        assert_eq!(path, optimal, "seed {seed}");
        assert_eq!(path.len() - 1, 13);
    }
}

#[test]
fn sarsa_learns_a_safe_path_away_from_the_cliff() {
    for seed in [1, 2, 3] {
        let path = greedy_path(&mut train(Algorithm::Sarsa, seed).0)
            .unwrap_or_else(|| panic!("seed {seed}: the greedy policy never reaches the goal"));
        assert!(path.len() - 1 > 13, "seed {seed}: {path:?}");
        // Never on the row next to the cliff, except to leave the start
        // column and to enter the goal column.
        let edge = path
            .iter()
            .filter(|&&(r, c)| r >= 2 && (1..=10).contains(&c))
            .count();
        assert_eq!(edge, 0, "seed {seed}: walks along the edge: {path:?}");
    }
}
