//! A first look at qlearn: teach an agent to cross a small gridworld.
//!
//! ```text
//!  . . . G     G: the goal (+1, the episode ends)
//!  . # . X     X: a pit (-1, the episode ends); #: a wall
//!  S . . .     S: the start; every other move costs -0.04
//! ```
//!
//! The loop is the whole API: `predict` an action for the current state,
//! take it, then `update` the model with the reward you got.
//!
//! Run: `cargo run --release --example gridworld`

use qlearn_core::{Experience, Model, ModelConfig};

const GRID: [&str; 3] = ["...G", ".#.X", "S..."];
const ARROWS: [char; 4] = ['↑', '→', '↓', '←'];

/// Moves from `(row, col)`: walls and edges block; returns the new cell,
/// the reward and whether the episode is over.
fn step((r, c): (i32, i32), action: usize) -> ((i32, i32), f64, bool) {
    let (dr, dc) = [(-1, 0), (0, 1), (1, 0), (0, -1)][action];
    let (nr, nc) = (r + dr, c + dc);
    let next = match GRID
        .get(nr as usize)
        .and_then(|row| row.as_bytes().get(nc as usize))
    {
        Some(b'#') | None => (r, c),
        Some(_) => (nr, nc),
    };
    match GRID[next.0 as usize].as_bytes()[next.1 as usize] {
        b'G' => (next, 1.0, true),
        b'X' => (next, -1.0, true),
        _ => (next, -0.04, false),
    }
}

fn main() -> Result<(), qlearn_core::Error> {
    // 4 actions (up, right, down, left); everything else at its default
    // (alpha 0.1, gamma 0.95, epsilon 0.1), seeded so the run repeats.
    let mut config = ModelConfig::new(4);
    config.seed = Some(42);
    let mut model = Model::new(config)?;

    for _episode in 0..2_000 {
        let mut cell = (2, 0);
        loop {
            // A state can be an integer, a string or an array: here [row, col].
            let state = [cell.0 as f64, cell.1 as f64];
            let action = model.predict(&state[..], true, None)?.action;
            let (next, reward, done) = step(cell, action);
            let next_state = [next.0 as f64, next.1 as f64];
            model
                .update(&Experience::new(&state[..], action, reward, &next_state[..]).done(done))?;
            if done {
                break;
            }
            cell = next;
        }
    }

    println!("Learned policy after {} episodes:", model.stats().episodes);
    for (r, row) in GRID.iter().enumerate() {
        let line: String = row
            .chars()
            .enumerate()
            .map(|(c, ch)| match ch {
                '.' | 'S' => {
                    let state = [r as f64, c as f64];
                    ARROWS[model.predict(&state[..], false, None).unwrap().action]
                }
                other => other,
            })
            .flat_map(|ch| [' ', ch])
            .collect();
        println!(" {line}");
    }
    let s = model.stats();
    let recent = &s.recent_returns[s.recent_returns.len() - 100..];
    println!(
        "Mean return of the last 100 episodes: {:.2} (best possible from S: {:.2})",
        recent.iter().sum::<f64>() / 100.0,
        1.0 - 4.0 * 0.04
    );
    Ok(())
}
