//! Memory per stored state: a model with 4 actions stores 10,000 and then
//! 1,000,000 states (integer, 12-character string and 2-number array), and
//! the bench reports bytes per state two ways: what the table says it holds
//! (`QTable::memory_bytes()`: capacities, not lengths) and the growth of the
//! process's resident set (RSS, from `/proc/self/statm`) while the states
//! were stored. Each measurement runs in a fresh child process so that the
//! RSS of one does not leak into the next.
//!
//! Run: `cargo bench -p qlearn-benches --bench memory`. Under `cargo test`
//! (no `--bench` argument) it measures the 10,000-state cases only.

use std::process::Command;

use qlearn_core::{Experience, Model, ModelConfig, StateRef};

#[path = "support/rss.rs"]
mod rss;
use rss::rss_bytes;

/// Stores `n` states of `kind` in a fresh model; prints one result line.
fn measure(kind: &str, n: usize) {
    // Keys are built before the baseline so only the model's memory counts.
    let ints: Vec<i64> = (0..n as i64).collect();
    let strs: Vec<String> = match kind {
        "string12" => (0..n).map(|i| format!("cell-{i:07}")).collect(),
        _ => vec![],
    };
    let arrays: Vec<[f64; 2]> = match kind {
        "array2" => (0..n)
            .map(|i| [(i / 1000) as f64, (i % 1000) as f64])
            .collect(),
        _ => vec![],
    };
    let key = |i: usize| match kind {
        "int" => StateRef::Int(ints[i]),
        "string12" => StateRef::Str(&strs[i]),
        _ => StateRef::Array(&arrays[i]),
    };
    let mut config = ModelConfig::new(4);
    config.seed = Some(1);
    let before = rss_bytes();
    let mut model = Model::new(config).unwrap();
    for i in 0..n {
        model
            .update(&Experience::new(key(i), i % 4, 1.0, key(i)).done(true))
            .unwrap();
    }
    let after = rss_bytes();
    assert_eq!(model.len(), n);
    let table = model.table().memory_bytes() as f64 / n as f64;
    let rss = match (before, after) {
        (Some(b), Some(a)) => format!("{:.1}", a.saturating_sub(b) as f64 / n as f64),
        _ => "n/a".into(),
    };
    println!("| {kind} | {n} | {table:.1} | {rss} |");
    std::hint::black_box(&model);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let (Some(kind), Some(n)) = (args.get(2), args.get(3)) {
        if args[1] == "--one" {
            measure(kind, n.parse().expect("a number of states"));
            return;
        }
    }
    let full = args.iter().any(|a| a == "--bench");
    let sizes: &[usize] = if full {
        &[10_000, 1_000_000]
    } else {
        &[10_000]
    };
    let exe = std::env::current_exe().expect("own executable");
    println!("Bytes per stored state, 4 actions:");
    println!();
    println!("| state | states | QTable::memory_bytes / state | RSS growth / state |");
    println!("| --- | ---: | ---: | ---: |");
    for kind in ["int", "string12", "array2"] {
        for &n in sizes {
            let status = Command::new(&exe)
                .args(["--one", kind, &n.to_string()])
                .status()
                .expect("run the measurement");
            assert!(status.success(), "measuring {kind} x {n} failed");
        }
    }
}
