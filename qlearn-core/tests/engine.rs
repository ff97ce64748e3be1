//! The engine's rules against hand-computed values: every learning rule,
//! episode ends, epsilon decay, action selection (masks, tie-breaking,
//! seeded replay), validation errors and the "a failed call changes nothing"
//! guarantee.

use qlearn_core::rng::Rng;
use qlearn_core::{
    Algorithm, Error, Experience, Exploration, Model, ModelConfig, QRows, State, StateRef,
};

const EPS: f64 = 1e-12;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= EPS * (1.0 + a.abs().max(b.abs()))
}

macro_rules! assert_close {
    ($a:expr, $b:expr) => {{
        let (a, b): (f64, f64) = ($a, $b);
        assert!(close(a, b), "{} = {a}, expected {b}", stringify!($a));
    }};
}

fn config(n: usize, algorithm: Algorithm) -> ModelConfig {
    let mut c = ModelConfig::new(n);
    c.algorithm = algorithm;
    c.learning_rate = 0.5;
    c.discount_factor = 0.9;
    c.epsilon = 0.2;
    c.seed = Some(7);
    c
}

/// A model whose Q-table holds exactly `rows` (raw rows: `2 * n` values for
/// double Q-learning), built through the JSON import so no rule is involved.
fn with_rows(cfg: ModelConfig, rows: &[(State, Vec<f64>)]) -> Model {
    let m = Model::new(cfg).unwrap();
    let mut doc: serde_json::Value = serde_json::from_str(&m.to_json().unwrap()).unwrap();
    doc["q_table"] = rows
        .iter()
        .map(|(s, q)| serde_json::json!({ "state": s, "q": q }))
        .collect();
    Model::from_json(&doc.to_string()).unwrap()
}

fn raw_row(m: &Model, s: i64) -> Vec<f64> {
    m.table().row(StateRef::Int(s)).unwrap().to_vec()
}

fn field_of<T: std::fmt::Debug>(r: Result<T, Error>) -> String {
    match r {
        Err(Error::InvalidField { field, .. }) => field,
        other => panic!("expected InvalidField, got {other:?}"),
    }
}

fn action_error<T: std::fmt::Debug>(r: Result<T, Error>) -> String {
    match r {
        Err(Error::InvalidAction { message, .. }) => message,
        other => panic!("expected InvalidAction, got {other:?}"),
    }
}

fn state_error<T: std::fmt::Debug>(r: Result<T, Error>) -> String {
    match r {
        Err(Error::InvalidState { message, .. }) => message,
        other => panic!("expected InvalidState, got {other:?}"),
    }
}

// ---- learning rules ---------------------------------------------------------

#[test]
fn q_learning_bootstraps_from_the_max_of_the_next_state() {
    // Q(1, ·) = [1, 0, -0.5]; Q(0, 1) = 0.5.
    let rows = [
        (State::Int(0), vec![0.0, 0.5, 0.0]),
        (State::Int(1), vec![1.0, 0.0, -0.5]),
    ];
    let mut m = with_rows(config(3, Algorithm::QLearning), &rows);
    // target = 1 + 0.9 * 1 = 1.9; Q = 0.5 + 0.5 * (1.9 - 0.5) = 1.2.
    let out = m.update(&Experience::new(0i64, 1, 1.0, 1i64)).unwrap();
    assert_close!(out.td_error, 1.4);
    assert_close!(out.q_value, 1.2);
    assert_eq!(raw_row(&m, 0), vec![0.0, out.q_value, 0.0]);
    assert_eq!(raw_row(&m, 1), vec![1.0, 0.0, -0.5], "next state untouched");
    assert_eq!(out.episode_return, None);

    // next_allowed_actions [1, 2]: max(0, -0.5) = 0; target = 1.
    let mut m = with_rows(config(3, Algorithm::QLearning), &rows);
    let out = m
        .update(&Experience::new(0i64, 1, 1.0, 1i64).next_allowed(&[2, 1]))
        .unwrap();
    assert_close!(out.td_error, 0.5);
    assert_close!(out.q_value, 0.75);

    // An unseen next state reads as initial_q; an unseen state starts there.
    let mut c = config(3, Algorithm::QLearning);
    c.initial_q = 2.0;
    let mut m = Model::new(c).unwrap();
    // target = -1 + 0.9 * 2 = 0.8; Q = 2 + 0.5 * (0.8 - 2) = 1.4.
    let out = m.update(&Experience::new(5i64, 2, -1.0, 6i64)).unwrap();
    assert_close!(out.q_value, 1.4);
    assert_eq!(m.len(), 1, "only the updated state is stored");
    assert_eq!(m.q_values(6i64).unwrap(), vec![2.0; 3]);
}

#[test]
fn done_does_not_bootstrap_and_truncated_does() {
    let rows = [(State::Int(1), vec![1.0, 0.0, -0.5])];
    let mut m = with_rows(config(3, Algorithm::QLearning), &rows);
    // done: target = r = 1; Q = 0.5.
    let out = m
        .update(&Experience::new(0i64, 0, 1.0, 1i64).done(true))
        .unwrap();
    assert_close!(out.q_value, 0.5);
    assert_eq!(out.episode_return, Some(1.0));
    assert_eq!(m.stats().episodes, 1);

    // truncated: target = 1 + 0.9 * 1 = 1.9; Q = 0.95; the episode ends too.
    let mut m = with_rows(config(3, Algorithm::QLearning), &rows);
    let out = m
        .update(&Experience::new(0i64, 0, 1.0, 1i64).truncated(true))
        .unwrap();
    assert_close!(out.q_value, 0.95);
    assert_eq!(out.episode_return, Some(1.0));
    assert_eq!(m.stats().episodes, 1);

    // Both: done wins (no bootstrap), one episode.
    let mut m = with_rows(config(3, Algorithm::QLearning), &rows);
    let out = m
        .update(
            &Experience::new(0i64, 0, 1.0, 1i64)
                .done(true)
                .truncated(true),
        )
        .unwrap();
    assert_close!(out.q_value, 0.5);
    assert_eq!(m.stats().episodes, 1);
}

#[test]
fn sarsa_bootstraps_from_the_next_action_and_requires_it() {
    let rows = [
        (State::Int(0), vec![0.0, 0.5, 0.0]),
        (State::Int(1), vec![1.0, 0.0, -0.5]),
    ];
    let mut m = with_rows(config(3, Algorithm::Sarsa), &rows);
    // target = 1 + 0.9 * Q(1, 2) = 0.55; Q = 0.5 + 0.5 * 0.05 = 0.525.
    let out = m
        .update(&Experience::new(0i64, 1, 1.0, 1i64).next_action(2))
        .unwrap();
    assert_close!(out.td_error, 0.05);
    assert_close!(out.q_value, 0.525);

    // Missing next_action is an error naming the field (and changes nothing).
    let before = m.to_bytes().unwrap();
    assert_eq!(
        field_of(m.update(&Experience::new(0i64, 1, 1.0, 1i64))),
        "next_action"
    );
    assert_eq!(m.to_bytes().unwrap(), before);
    // ... unless the episode terminated: then there is nothing to bootstrap.
    let out = m
        .update(&Experience::new(0i64, 1, 1.0, 1i64).done(true))
        .unwrap();
    assert_close!(out.q_value, 0.525 + 0.5 * (1.0 - 0.525));
    // A truncated SARSA episode still bootstraps, so it still needs it.
    assert_eq!(
        field_of(m.update(&Experience::new(0i64, 1, 1.0, 1i64).truncated(true))),
        "next_action"
    );
    // next_action must be allowed in next_state when a mask is given.
    let msg = action_error(
        m.update(
            &Experience::new(0i64, 1, 1.0, 1i64)
                .next_action(0)
                .next_allowed(&[1, 2]),
        ),
    );
    assert!(msg.contains("next_action"), "{msg}");

    // Other algorithms ignore next_action.
    let mut q = with_rows(config(3, Algorithm::QLearning), &rows);
    let out = q
        .update(&Experience::new(0i64, 1, 1.0, 1i64).next_action(2))
        .unwrap();
    assert_close!(out.q_value, 1.2);
}

#[test]
fn expected_sarsa_under_epsilon_greedy() {
    let rows = [(State::Int(1), vec![1.0, 0.0, -0.5])];
    // epsilon 0.2, 3 actions: E = 0.8 * 1 + 0.2 * (1 + 0 - 0.5) / 3.
    let e = 0.8 + 0.2 * (0.5 / 3.0);
    let mut m = with_rows(config(3, Algorithm::ExpectedSarsa), &rows);
    let out = m.update(&Experience::new(0i64, 0, 1.0, 1i64)).unwrap();
    assert_close!(out.td_error, 1.0 + 0.9 * e);
    assert_close!(out.q_value, 0.5 * (1.0 + 0.9 * e));

    // Restricted to [1, 2]: E = 0.8 * 0 + 0.2 * (0 - 0.5) / 2 = -0.05.
    let mut m = with_rows(config(3, Algorithm::ExpectedSarsa), &rows);
    let out = m
        .update(&Experience::new(0i64, 0, 1.0, 1i64).next_allowed(&[1, 2]))
        .unwrap();
    assert_close!(out.td_error, 1.0 + 0.9 * -0.05);

    // Tied greedy actions share 1 - epsilon: E = 0.8 * 1 + 0.2 * 2 / 3.
    let tied = [(State::Int(1), vec![1.0, 1.0, 0.0])];
    let mut m = with_rows(config(3, Algorithm::ExpectedSarsa), &tied);
    let out = m.update(&Experience::new(0i64, 0, 0.0, 1i64)).unwrap();
    assert_close!(out.td_error, 0.9 * (0.8 + 0.2 * 2.0 / 3.0));

    // The current (decayed) epsilon is the policy's: set it to 0 => max.
    let mut m = with_rows(config(3, Algorithm::ExpectedSarsa), &rows);
    m.set_epsilon(0.0).unwrap();
    let out = m.update(&Experience::new(0i64, 0, 0.0, 1i64)).unwrap();
    assert_close!(out.td_error, 0.9);
    // epsilon 1: the plain mean.
    m.set_epsilon(1.0).unwrap();
    let out = m.update(&Experience::new(2i64, 0, 0.0, 1i64)).unwrap();
    assert_close!(out.td_error, 0.9 * 0.5 / 3.0);
}

#[test]
fn expected_sarsa_under_softmax() {
    let rows = [(State::Int(1), vec![1.0, 0.0, -0.5])];
    let mut c = config(3, Algorithm::ExpectedSarsa);
    c.exploration = Exploration::Softmax;
    c.temperature = 0.5;
    let w: Vec<f64> = [1.0f64, 0.0, -0.5]
        .iter()
        .map(|q| (q / 0.5).exp())
        .collect();
    let e = (w[0] * 1.0 + w[1] * 0.0 + w[2] * -0.5) / (w[0] + w[1] + w[2]);
    let mut m = with_rows(c.clone(), &rows);
    let out = m.update(&Experience::new(0i64, 0, 1.0, 1i64)).unwrap();
    assert_close!(out.td_error, 1.0 + 0.9 * e);

    // Restricted to [0, 2].
    let e = (w[0] * 1.0 + w[2] * -0.5) / (w[0] + w[2]);
    let mut m = with_rows(c, &rows);
    let out = m
        .update(&Experience::new(0i64, 0, 1.0, 1i64).next_allowed(&[0, 2]))
        .unwrap();
    assert_close!(out.td_error, 1.0 + 0.9 * e);
}

/// The first draw of a fresh model's generator picks the table double
/// Q-learning updates (0 = A, 1 = B): find seeds for both.
fn seed_for_side(side: usize) -> u64 {
    (0..).find(|&s| Rng::from_seed(s).below(2) == side).unwrap()
}

#[test]
fn double_q_learning_updates_one_table_evaluated_by_the_other() {
    // Two actions. Next state: A = [1, 5], B = [3, 2]. State 0: A = [0, 0], B = [4, 4].
    let rows = [
        (State::Int(0), vec![0.0, 0.0, 4.0, 4.0]),
        (State::Int(1), vec![1.0, 5.0, 3.0, 2.0]),
    ];
    for side in [0, 1] {
        let mut c = config(2, Algorithm::DoubleQLearning);
        c.seed = Some(seed_for_side(side));
        let mut m = with_rows(c, &rows);
        let out = m.update(&Experience::new(0i64, 0, 1.0, 1i64)).unwrap();
        let row = raw_row(&m, 0);
        if side == 0 {
            // A updates: a* = argmax A(1) = 1, evaluated by B: 2.
            // target = 1 + 0.9 * 2 = 2.8; A(0, 0) = 0 + 0.5 * 2.8 = 1.4.
            assert_close!(out.td_error, 2.8);
            assert_close!(row[0], 1.4);
            assert_eq!(&row[1..], &[0.0, 4.0, 4.0], "only A(0, 0) moved");
            assert_close!(out.q_value, (1.4 + 4.0) / 2.0);
        } else {
            // B updates: a* = argmax B(1) = 0, evaluated by A: 1.
            // target = 1 + 0.9 * 1 = 1.9; B(0, 0) = 4 + 0.5 * (1.9 - 4) = 2.95.
            assert_close!(out.td_error, 1.9 - 4.0);
            assert_close!(row[2], 2.95);
            assert_eq!(
                [row[0], row[1], row[3]],
                [0.0, 0.0, 4.0],
                "only B(0, 0) moved"
            );
            assert_close!(out.q_value, (0.0 + 2.95) / 2.0);
        }
        assert_eq!(raw_row(&m, 1), vec![1.0, 5.0, 3.0, 2.0]);
        // Users see the mean of both tables; so does the greedy choice.
        assert_close!(m.q_values(0i64).unwrap()[0], out.q_value);
    }
    // Both sides occur, about equally, over many updates.
    let mut m = Model::new(config(2, Algorithm::DoubleQLearning)).unwrap();
    let (mut a_moved, mut b_moved) = (0, 0);
    for i in 0..2000i64 {
        m.update(&Experience::new(i, 0, 1.0, i).done(true)).unwrap();
        let r = raw_row(&m, i);
        a_moved += (r[0] != 0.0) as u32;
        b_moved += (r[2] != 0.0) as u32;
    }
    assert_eq!(a_moved + b_moved, 2000);
    assert!(
        (850..1150).contains(&a_moved),
        "A moved {a_moved} times of 2000"
    );
}

/// The Q-value a double-Q update reports is the mean of both tables' values
/// of the action it updated, for any action (with action 0, `n + a` and
/// `n - a` would name the same column).
#[test]
fn double_q_reports_the_mean_of_both_tables_for_the_updated_action() {
    // Two actions. State 0: A = [0, 0], B = [4, 6]. Next state: A = [1, 5], B = [3, 2].
    let rows = [
        (State::Int(0), vec![0.0, 0.0, 4.0, 6.0]),
        (State::Int(1), vec![1.0, 5.0, 3.0, 2.0]),
    ];
    for side in [0, 1] {
        let mut c = config(2, Algorithm::DoubleQLearning);
        c.seed = Some(seed_for_side(side));
        let mut m = with_rows(c, &rows);
        let out = m.update(&Experience::new(0i64, 1, 1.0, 1i64)).unwrap();
        let row = raw_row(&m, 0);
        if side == 0 {
            // A updates: a* = argmax A(1) = 1, evaluated by B: 2.
            // target = 1 + 0.9 * 2 = 2.8; A(0, 1) = 0 + 0.5 * 2.8 = 1.4.
            assert_eq!(row, vec![0.0, 1.4, 4.0, 6.0]);
            assert_close!(out.q_value, (1.4 + 6.0) / 2.0);
        } else {
            // B updates: a* = argmax B(1) = 0, evaluated by A: 1.
            // target = 1.9; B(0, 1) = 6 + 0.5 * (1.9 - 6) = 3.95.
            assert_eq!(row, vec![0.0, 0.0, 4.0, 3.95]);
            assert_close!(out.q_value, (0.0 + 3.95) / 2.0);
        }
        assert_close!(m.q_values(0i64).unwrap()[1], out.q_value);
    }
}

#[test]
fn q_learning_bootstraps_from_the_row_maximum_at_every_width() {
    // Widths 2, 3, 4 and 8 take unrolled paths, the others a loop: for
    // each, the next state's largest value sits at its last action, after
    // a smaller one at action 0 and equal ones between.
    for n in 1..=9usize {
        let mut next = vec![1.0; n];
        next[0] = 2.0;
        next[n - 1] = if n == 1 { 2.0 } else { 5.0 };
        let rows = [(State::Int(1), next)];
        for fast in [true, false] {
            let mut m = with_rows(config(n, Algorithm::QLearning), &rows);
            let e = Experience::new(0i64, 0, 1.0, 1i64);
            // Allowing every action sends the update down the general path.
            let all: Vec<usize> = (0..n).collect();
            let out = if fast {
                m.update(&e).unwrap()
            } else {
                m.update(&e.next_allowed(&all)).unwrap()
            };
            // target = 1 + 0.9 * max; Q(0, 0) = 0.5 * target.
            let max = if n == 1 { 2.0 } else { 5.0 };
            assert_close!(out.q_value, 0.5 * (1.0 + 0.9 * max));
        }
    }
}

#[test]
fn double_q_masks_restrict_the_argmax() {
    // A(1) = [1, 5]: with next_allowed [0], a* = 0, evaluated by B(1, 0) = 3.
    let rows = [(State::Int(1), vec![1.0, 5.0, 3.0, 2.0])];
    let mut c = config(2, Algorithm::DoubleQLearning);
    c.seed = Some(seed_for_side(0));
    let mut m = with_rows(c, &rows);
    let out = m
        .update(&Experience::new(0i64, 0, 0.0, 1i64).next_allowed(&[0]))
        .unwrap();
    assert_close!(out.td_error, 0.9 * 3.0);
}

// ---- episodes, returns, statistics, epsilon ----------------------------------

#[test]
fn episodes_returns_and_running_mean() {
    let mut m = Model::new(config(2, Algorithm::QLearning)).unwrap();
    for r in [1.0, 2.0] {
        let out = m.update(&Experience::new(0i64, 0, r, 1i64)).unwrap();
        assert_eq!(out.episode_return, None);
    }
    let out = m
        .update(&Experience::new(1i64, 1, 3.0, 2i64).done(true))
        .unwrap();
    assert_eq!(out.episode_return, Some(6.0));
    let out = m
        .update(&Experience::new(0i64, 1, -1.0, 0i64).truncated(true))
        .unwrap();
    assert_eq!(out.episode_return, Some(-1.0));
    m.predict(0i64, true, None).unwrap();
    let s = m.stats();
    assert_eq!(s.updates, 4);
    assert_eq!(s.predictions, 1);
    assert_eq!(s.episodes, 2);
    assert_eq!(s.states, 2);
    assert_eq!(s.recent_returns, vec![6.0, -1.0]);
    assert_close!(s.mean_reward, 5.0 / 4.0);
}

#[test]
fn recent_returns_keep_the_last_thousand() {
    let mut m = Model::new(config(1, Algorithm::QLearning)).unwrap();
    for i in 0..1005 {
        m.update(&Experience::new(0i64, 0, i as f64, 0i64).done(true))
            .unwrap();
    }
    let r = m.stats().recent_returns;
    assert_eq!(r.len(), qlearn_core::model::RECENT_RETURNS);
    assert_eq!((r[0], r[999]), (5.0, 1004.0));
}

#[test]
fn epsilon_decays_per_episode_and_is_floored() {
    let mut c = config(2, Algorithm::QLearning);
    c.epsilon = 0.5;
    c.epsilon_decay = 0.5;
    c.min_epsilon = 0.1;
    let mut m = Model::new(c).unwrap();
    // Not an episode end: no decay.
    let out = m.update(&Experience::new(0i64, 0, 0.0, 1i64)).unwrap();
    assert_eq!(out.epsilon, 0.5);
    let mut seen = vec![];
    for i in 0..4 {
        let exp = Experience::new(0i64, 0, 0.0, 1i64);
        let exp = if i % 2 == 0 {
            exp.done(true)
        } else {
            exp.truncated(true)
        };
        seen.push(m.update(&exp).unwrap().epsilon);
    }
    assert_eq!(seen, vec![0.25, 0.125, 0.1, 0.1]);
    assert_eq!(m.epsilon(), 0.1);
    assert_eq!(m.stats().epsilon, 0.1);
    assert_eq!(m.predict(0i64, true, None).unwrap().epsilon, 0.1);

    // A start below the floor is left alone (the floor bounds the decay only).
    let mut c = config(2, Algorithm::QLearning);
    c.epsilon = 0.0;
    c.epsilon_decay = 0.5;
    let mut m = Model::new(c).unwrap();
    let out = m
        .update(&Experience::new(0i64, 0, 0.0, 1i64).done(true))
        .unwrap();
    assert_eq!(out.epsilon, 0.0);
}

// ---- action selection ----------------------------------------------------------

#[test]
fn unseen_states_read_as_initial_q_and_are_not_stored() {
    let mut c = config(3, Algorithm::QLearning);
    c.initial_q = 1.5;
    let mut m = Model::new(c).unwrap();
    let p = m.predict_full("never seen", true, None).unwrap();
    assert_eq!(p.q_values, vec![1.5; 3]);
    assert!(!p.explored, "all actions tie, so no choice is exploratory");
    m.predict(StateRef::Array(&[1.0, 2.0]), false, None)
        .unwrap();
    assert!(m.is_empty());
    assert_eq!(m.stats().states, 0);
    assert_eq!(m.stats().predictions, 2);
}

#[test]
fn allowed_actions_restrict_greedy_and_exploratory_choices() {
    let rows = [(State::Int(0), vec![5.0, 1.0, 3.0, 0.0])];
    let mut m = with_rows(config(4, Algorithm::QLearning), &rows);
    for _ in 0..100 {
        let d = m.predict(0i64, false, Some(&[1, 2])).unwrap();
        assert_eq!((d.action, d.explored), (2, false));
    }
    m.set_epsilon(1.0).unwrap();
    let mut counts = [0u32; 4];
    for _ in 0..4000 {
        let d = m.predict(0i64, true, Some(&[1, 3])).unwrap();
        counts[d.action] += 1;
        // 1 is the greedy allowed action; choosing it is not exploring.
        assert_eq!(d.explored, d.action == 3);
    }
    assert_eq!(counts[0] + counts[2], 0, "{counts:?}");
    assert!(counts[1] > 1800 && counts[3] > 1800, "{counts:?}");
    // Unseen states too.
    for _ in 0..200 {
        let a = m.predict(99i64, true, Some(&[2])).unwrap().action;
        assert_eq!(a, 2);
    }
}

#[test]
fn softmax_follows_the_boltzmann_distribution() {
    let rows = [(State::Int(0), vec![1.0, 0.0, -1.0])];
    let mut c = config(3, Algorithm::QLearning);
    c.exploration = Exploration::Softmax;
    c.temperature = 1.0;
    let mut m = with_rows(c, &rows);
    let n = 30_000;
    let mut counts = [0u32; 3];
    for _ in 0..n {
        let d = m.predict(0i64, true, None).unwrap();
        counts[d.action] += 1;
        assert_eq!(d.explored, d.action != 0);
    }
    let z = 1f64.exp() + 1.0 + (-1f64).exp();
    for (a, q) in [1.0f64, 0.0, -1.0].iter().enumerate() {
        let p = q.exp() / z;
        let got = counts[a] as f64 / n as f64;
        assert!((got - p).abs() < 0.015, "action {a}: {got} vs {p}");
    }
    // Masked: only allowed actions, renormalised.
    for _ in 0..500 {
        let a = m.predict(0i64, true, Some(&[1, 2])).unwrap().action;
        assert!(a == 1 || a == 2);
    }
    // Not exploring: greedy.
    assert_eq!(m.predict(0i64, false, None).unwrap().action, 0);
}

/// Double Q-learning's softmax is over the mean of the two tables at the
/// configured temperature: rows Q_A = [2, 0, 1], Q_B = [0, 0, 1] have means
/// [1, 0, 1]; at T = 0.5 the weights are e^0, e^-2, e^0 (computed by hand,
/// not with the engine's sum-and-doubled-temperature form).
#[test]
fn double_q_softmax_is_over_the_mean_at_the_temperature() {
    let rows = [(State::Int(0), vec![2.0, 0.0, 1.0, 0.0, 0.0, 1.0])];
    let mut c = config(3, Algorithm::DoubleQLearning);
    c.exploration = Exploration::Softmax;
    c.temperature = 0.5;
    let mut m = with_rows(c, &rows);
    let z = 2.0 + (-2f64).exp();
    let want = [1.0 / z, (-2f64).exp() / z, 1.0 / z];
    let p = m.action_probabilities(0i64, None, true).unwrap();
    for a in 0..3 {
        assert_close!(p[a], want[a]);
    }
    // Masked to {1, 2}: e^-2 and e^0 renormalised.
    let p = m.action_probabilities(0i64, Some(&[1, 2]), true).unwrap();
    let z2 = 1.0 + (-2f64).exp();
    assert_close!(p[0], 0.0);
    assert_close!(p[1], (-2f64).exp() / z2);
    assert_close!(p[2], 1.0 / z2);
    // The probability predict reports is the same one, and the draws follow it.
    let mut counts = [0u32; 3];
    for _ in 0..20_000 {
        let d = m.predict_full(0i64, true, None).unwrap();
        assert_close!(d.probability, want[d.action]);
        counts[d.action] += 1;
    }
    let got = f64::from(counts[1]) / 20_000.0;
    assert!((got - want[1]).abs() < 0.01, "{counts:?}");
}

#[test]
fn ties_are_broken_uniformly_at_random() {
    let rows = [(State::Int(0), vec![2.0, 2.0, 0.0, 2.0])];
    let mut m = with_rows(config(4, Algorithm::QLearning), &rows);
    let n = 30_000;
    let mut counts = [0u32; 4];
    for _ in 0..n {
        let d = m.predict(0i64, false, None).unwrap();
        assert!(!d.explored);
        counts[d.action] += 1;
    }
    assert_eq!(counts[2], 0);
    for a in [0, 1, 3] {
        // Expected 10,000 each; 5 standard deviations is about 410.
        assert!((9_500..10_500).contains(&counts[a]), "{counts:?}");
    }
    // With a mask, among the allowed tied actions only.
    let mut counts = [0u32; 4];
    for _ in 0..6_000 {
        counts[m.predict(0i64, false, Some(&[3, 2, 1])).unwrap().action] += 1;
    }
    assert_eq!(counts[0] + counts[2], 0);
    assert!((2_700..3_300).contains(&counts[1]), "{counts:?}");
    // Unseen states: every action ties.
    let mut counts = [0u32; 4];
    for _ in 0..8_000 {
        counts[m.predict(1i64, false, None).unwrap().action] += 1;
    }
    assert!(
        counts.iter().all(|&c| (1_700..2_300).contains(&c)),
        "{counts:?}"
    );
    // Double Q-learning ties on the sum of both tables.
    let rows = [(State::Int(0), vec![1.0, 3.0, 0.0, 3.0, 1.0, 0.0])];
    let mut m = with_rows(config(3, Algorithm::DoubleQLearning), &rows);
    let mut counts = [0u32; 3];
    for _ in 0..4_000 {
        counts[m.predict(0i64, false, None).unwrap().action] += 1;
    }
    assert_eq!(counts[2], 0);
    assert!(counts[0] > 1_800 && counts[1] > 1_800, "{counts:?}");
}

#[test]
fn explore_false_never_explores() {
    let rows = [(State::Int(0), vec![0.0, 1.0, 0.5])];
    let mut c = config(3, Algorithm::QLearning);
    c.epsilon = 1.0;
    let mut m = with_rows(c.clone(), &rows);
    for _ in 0..1000 {
        let d = m.predict(0i64, false, None).unwrap();
        assert_eq!((d.action, d.explored), (1, false));
    }
    // ... while explore = true with epsilon 1 does (2/3 of the time).
    let explored = (0..3000)
        .filter(|_| m.predict(0i64, true, None).unwrap().explored)
        .count();
    assert!((1_800..2_200).contains(&explored), "{explored}");
    c.exploration = Exploration::Softmax;
    let mut m = with_rows(c, &rows);
    for _ in 0..1000 {
        assert_eq!(m.predict(0i64, false, None).unwrap().action, 1);
    }
}

/// Drives a model through a fixed script of predicts and updates and
/// returns every observable result.
fn script(m: &mut Model) -> Vec<String> {
    let mut out = vec![];
    let mut s = 0i64;
    for step in 0..2_000 {
        let d = m.predict(s, true, None).unwrap();
        let next = (s + d.action as i64 + 1) % 17;
        let mut exp = Experience::new(s, d.action, (next % 3) as f64 - 1.0, next);
        exp.done = step % 50 == 49;
        exp.next_action = Some(step % 3);
        let u = m.update(&exp).unwrap();
        out.push(format!("{d:?} {u:?}"));
        s = next;
    }
    out
}

#[test]
fn a_seeded_model_replays_the_same_choices() {
    for algorithm in [
        Algorithm::QLearning,
        Algorithm::Sarsa,
        Algorithm::ExpectedSarsa,
        Algorithm::DoubleQLearning,
    ] {
        for exploration in [Exploration::EpsilonGreedy, Exploration::Softmax] {
            let mut c = config(3, algorithm);
            c.exploration = exploration;
            c.epsilon = 0.3;
            c.epsilon_decay = 0.99;
            let a = script(&mut Model::new(c.clone()).unwrap());
            let b = script(&mut Model::new(c.clone()).unwrap());
            assert_eq!(a, b, "{algorithm:?} {exploration:?}");
            c.seed = Some(8);
            let other = script(&mut Model::new(c).unwrap());
            assert_ne!(a, other, "another seed, another run");
        }
    }
}

// ---- validation ----------------------------------------------------------------

#[test]
fn every_configuration_error_names_its_field() {
    type Case = (&'static str, fn(&mut ModelConfig));
    let cases: [Case; 12] = [
        ("n_actions", |c| c.n_actions = 0),
        ("n_actions", |c| c.n_actions = 4097),
        ("learning_rate", |c| c.learning_rate = 0.0),
        ("learning_rate", |c| c.learning_rate = 1.0001),
        ("discount_factor", |c| c.discount_factor = 1.5),
        ("epsilon", |c| c.epsilon = -0.1),
        ("epsilon_decay", |c| c.epsilon_decay = 1.5),
        ("min_epsilon", |c| c.min_epsilon = f64::NAN),
        ("initial_q", |c| c.initial_q = f64::NEG_INFINITY),
        ("temperature", |c| c.temperature = -1.0),
        ("action_names", |c| {
            c.action_names = Some(vec!["".into(); 4])
        }),
        ("state_bins", |c| c.state_bins = Some(vec![])),
    ];
    for (field, mutate) in cases {
        let mut c = ModelConfig::new(4);
        mutate(&mut c);
        let err = Model::new(c).unwrap_err();
        assert!(err.to_string().contains(field), "{err}");
        assert_eq!(field_of::<()>(Err(err)), field);
    }
    // The message states the allowed range.
    let mut c = ModelConfig::new(4);
    c.learning_rate = 2.0;
    let msg = Model::new(c).unwrap_err().to_string();
    assert!(msg.contains("(0, 1]") && msg.contains('2'), "{msg}");
    // Out-of-range values are rejected, never clamped: a PATCH too.
    let mut m = Model::new(ModelConfig::new(4)).unwrap();
    let mut c = ModelConfig::new(4);
    c.epsilon = 1.5;
    assert_eq!(field_of(m.reconfigure(c)), "epsilon");
    assert_eq!(field_of(m.set_epsilon(-0.5)), "epsilon");
    assert_eq!(field_of(m.reconfigure(ModelConfig::new(5))), "n_actions");
}

#[test]
fn every_call_error_names_what_is_wrong() {
    let mut m = Model::new(config(3, Algorithm::QLearning)).unwrap();
    let e = |s: i64, a: usize, r: f64| Experience::new(s, a, r, s + 1);
    assert_eq!(field_of(m.update(&e(0, 0, f64::NAN))), "reward");
    assert_eq!(field_of(m.update(&e(0, 0, f64::INFINITY))), "reward");
    assert_eq!(field_of(m.update(&e(0, 0, 1e13))), "reward");
    assert!(action_error(m.update(&e(0, 3, 0.0))).contains("action 3"));
    assert!(action_error(m.update(&e(0, 0, 0.0).next_action(7))).contains("next_action"));
    let msg = action_error(m.update(&e(0, 0, 0.0).next_allowed(&[])));
    assert!(msg.contains("next_allowed_actions"), "{msg}");
    let msg = action_error(m.update(&e(0, 0, 0.0).next_allowed(&[1, 1])));
    assert!(msg.contains("next_allowed_actions"), "{msg}");
    let msg = action_error(m.update(&e(0, 0, 0.0).next_allowed(&[3])));
    assert!(msg.contains("next_allowed_actions"), "{msg}");
    let nan = [f64::NAN];
    let msg = state_error(m.update(&Experience::new(StateRef::Array(&nan), 0, 0.0, 1i64)));
    assert!(msg.starts_with("state"), "{msg}");
    let msg = state_error(m.update(&Experience::new(1i64, 0, 0.0, StateRef::Array(&[]))));
    assert!(msg.starts_with("next_state"), "{msg}");
    let long = "x".repeat(2000);
    assert!(state_error(m.predict(long.as_str(), true, None)).starts_with("state"));
    for bad in [&[][..], &[0, 0][..], &[5][..]] {
        let msg = action_error(m.predict(0i64, true, Some(bad)));
        assert!(msg.contains("allowed_actions"), "{msg}");
    }
    // A batch names the item.
    let batch = [e(0, 0, 1.0), e(1, 0, f64::NAN)];
    assert_eq!(field_of(m.update_batch(&batch)), "experiences[1].reward");
    assert_eq!(m.stats().updates, 0, "a refused batch applies nothing");
    // A one-item batch answers like a single update (the rule every store
    // and the HTTP API share: Learner::validate_batch).
    assert_eq!(field_of(m.update_batch(&[e(1, 0, f64::NAN)])), "reward");
    assert_eq!(field_of(m.update(&e(1, 0, f64::NAN))), "reward");
}

#[test]
fn a_failed_call_changes_nothing() {
    for algorithm in [
        Algorithm::QLearning,
        Algorithm::Sarsa,
        Algorithm::ExpectedSarsa,
        Algorithm::DoubleQLearning,
    ] {
        let mut m = Model::new(config(3, algorithm)).unwrap();
        script(&mut m);
        let before = m.to_bytes().unwrap();
        let nan = [f64::NAN];
        let bad: Vec<Experience> = vec![
            Experience::new(0i64, 9, 0.0, 1i64).next_action(0),
            Experience::new(0i64, 0, f64::NAN, 1i64).next_action(0),
            Experience::new(0i64, 0, 0.0, 1i64).next_action(5),
            Experience::new(0i64, 0, 0.0, 1i64)
                .next_action(0)
                .next_allowed(&[]),
            Experience::new(99i64, 0, 0.0, StateRef::Array(&nan)).next_action(0),
            Experience::new(StateRef::Array(&nan), 0, 0.0, 98i64).next_action(0),
        ];
        for exp in &bad {
            assert!(m.update(exp).is_err());
            assert!(m
                .update_batch(&[Experience::new(1i64, 0, 1.0, 2i64).next_action(0), *exp])
                .is_err());
        }
        assert!(action_error(m.predict(0i64, true, Some(&[7]))).contains("outside"));
        assert!(state_error(m.predict(StateRef::Array(&nan), true, None)).contains("finite"));
        assert_eq!(m.to_bytes().unwrap(), before, "{algorithm:?}");
    }

    // An update whose result would overflow (only possible with imported
    // values near f64::MAX) is refused without touching the generator.
    let big = f64::MAX * 0.75;
    let rows = [
        (State::Int(0), vec![-big; 4]),
        (State::Int(1), vec![big; 4]),
    ];
    let mut c = config(2, Algorithm::DoubleQLearning);
    c.discount_factor = 1.0;
    c.learning_rate = 1.0;
    let mut m = with_rows(c, &rows);
    let before = m.to_bytes().unwrap();
    assert_eq!(
        field_of(m.update(&Experience::new(0i64, 0, 0.0, 1i64))),
        "reward"
    );
    assert_eq!(m.to_bytes().unwrap(), before);
}

#[test]
fn states_of_every_kind_and_their_canonical_forms() {
    let mut m = Model::new(config(2, Algorithm::QLearning)).unwrap();
    m.update(&Experience::new(StateRef::Array(&[1.0, -0.0]), 0, 1.0, "s1").done(true))
        .unwrap();
    // [1, 0], [1.0, 0.0] and [1, -0] are the same state.
    let q = m.q_values(StateRef::Array(&[1.0, 0.0])).unwrap();
    assert_close!(q[0], 0.5);
    m.update(&Experience::new("s1", 1, 2.0, 7i64).done(true))
        .unwrap();
    m.update(&Experience::new(7i64, 1, 2.0, 7i64).done(true))
        .unwrap();
    let rows = m.rows(0, 10);
    let states: Vec<String> = rows.iter().map(|(k, _)| k.to_state().to_string()).collect();
    assert_eq!(states, vec!["[1,0]", "\"s1\"", "7"]);
    // Discretized models key by bins.
    let mut c = config(2, Algorithm::QLearning);
    c.state_bins = Some(vec![qlearn_core::Bin {
        low: 0.0,
        high: 1.0,
        bins: 4,
    }]);
    let mut m = Model::new(c).unwrap();
    m.update(&Experience::new(StateRef::Array(&[0.3]), 0, 1.0, StateRef::Array(&[0.9])).done(true))
        .unwrap();
    assert_close!(m.q_values(StateRef::Array(&[0.49])).unwrap()[0], 0.5);
    assert_eq!(m.q_values(StateRef::Array(&[0.51])).unwrap()[0], 0.0);
    assert!(state_error(m.predict(3i64, true, None)).contains("state_bins"));
}

#[test]
fn models_can_be_shared_between_threads() {
    fn shared<T: Send + Sync + Clone>() {}
    shared::<Model>();
    shared::<qlearn_core::Learner>();
    shared::<qlearn_core::QTable>();
}
