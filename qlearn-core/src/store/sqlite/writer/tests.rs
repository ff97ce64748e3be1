//! The writer's gather rules.

use std::time::{Duration, Instant};

use super::{gather_deadline, gather_target, gathering, MAX_GATHER, MIN_GATHER};

#[test]
fn the_writer_waits_for_half_of_the_last_batch() {
    let targets: Vec<usize> = [0, 1, 2, 3, 28, 29].map(gather_target).into();
    assert_eq!(targets, [0, 1, 1, 2, 14, 15]);
}

#[test]
fn the_writer_gathers_until_the_target_or_a_close() {
    assert!(gathering(3, 4, false));
    assert!(!gathering(4, 4, false));
    assert!(!gathering(5, 4, false));
    assert!(!gathering(0, 4, true));
    assert!(!gathering(0, 0, false));
}

#[test]
fn the_gather_lasts_half_the_last_batch_within_its_bounds() {
    let now = Instant::now();
    assert_eq!(gather_deadline(now, Duration::ZERO), now + MIN_GATHER);
    let half = MIN_GATHER + Duration::from_micros(40);
    assert_eq!(gather_deadline(now, half * 2), now + half);
    assert_eq!(gather_deadline(now, MAX_GATHER * 4), now + MAX_GATHER);
}
