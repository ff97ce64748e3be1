//! Textbook correctness: Sutton & Barto's cliff walking (example 6.6).
//!
//! 4x12 grid, start bottom left, goal bottom right, -1 per step, -100 and
//! back to the start for stepping into the cliff between them. Trained with
//! epsilon-greedy (0.1), Q-learning's greedy policy is the optimal 13-step
//! path along the cliff edge; SARSA's is a safe path that keeps away from
//! the edge (alpha 0.5 as in the book for 500 episodes, then 0.05 for 500
//! more so that the estimates settle). `examples/examples/cliff_walking.rs` prints the same policies.

use qlearn_core::{Algorithm, Experience, Model, ModelConfig};

const COLS: i64 = 12;
const START: (i64, i64) = (3, 0);
const GOAL: (i64, i64) = (3, 11);
const MOVES: [(i64, i64); 4] = [(-1, 0), (0, 1), (1, 0), (0, -1)];

fn is_cliff((r, c): (i64, i64)) -> bool {
    r == 3 && (1..=10).contains(&c)
}

fn step(pos: (i64, i64), action: usize) -> ((i64, i64), f64, bool) {
    let (dr, dc) = MOVES[action];
    let next = ((pos.0 + dr).clamp(0, 3), (pos.1 + dc).clamp(0, COLS - 1));
    if is_cliff(next) {
        (START, -100.0, false)
    } else {
        (next, -1.0, next == GOAL)
    }
}

fn state((r, c): (i64, i64)) -> i64 {
    r * COLS + c
}

fn train(algorithm: Algorithm, seed: u64) -> Model {
    let mut config = ModelConfig::new(4);
    config.algorithm = algorithm;
    config.learning_rate = 0.5;
    config.discount_factor = 1.0;
    config.epsilon = 0.1;
    config.seed = Some(seed);
    let mut model = Model::new(config).unwrap();
    for episode in 0..1000 {
        if episode == 500 {
            // Settle the estimates: a smaller step size for the second half.
            let mut settled = model.config().clone();
            settled.learning_rate = 0.05;
            model.reconfigure(settled).unwrap();
        }
        let mut pos = START;
        let mut action = model.predict(state(pos), true, None).unwrap().action;
        for _ in 0..10_000 {
            let (next, reward, done) = step(pos, action);
            let next_action = model.predict(state(next), true, None).unwrap().action;
            let exp = Experience::new(state(pos), action, reward, state(next))
                .done(done)
                .next_action(next_action);
            model.update(&exp).unwrap();
            if done {
                break;
            }
            (pos, action) = (next, next_action);
        }
    }
    model
}

/// The cells the greedy policy visits from the start, up to the goal
/// (`None` if it does not get there in 100 moves).
fn greedy_path(model: &mut Model) -> Option<Vec<(i64, i64)>> {
    let mut path = vec![START];
    let mut pos = START;
    while pos != GOAL {
        if path.len() > 100 {
            return None;
        }
        let a = model.predict(state(pos), false, None).unwrap().action;
        pos = step(pos, a).0;
        path.push(pos);
    }
    Some(path)
}

#[test]
fn q_learning_learns_the_optimal_path_along_the_cliff() {
    for seed in [1, 2, 3] {
        let path = greedy_path(&mut train(Algorithm::QLearning, seed))
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
        let path = greedy_path(&mut train(Algorithm::Sarsa, seed))
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
