//! Conformance check of the settle pass over many models (listed in
//! `conformance_tests!` with the rest of the suite): it must find every
//! model with a decision past its deadline, however the models' numbers
//! and deadlines interleave, and settle only those decisions.

use qlearn_core::decisions::Decide;
use qlearn_core::store::Store;
use qlearn_core::StateRef;

use super::decisions::{log_page, logging_model, reward, setting};
use super::{limits, meter, new_user, ok, seeded, NOW};

/// Five models made in turn, so that the models with due decisions lie
/// next to each other and on both sides of one whose decisions are open but
/// not due and of one with none open: a 60 s window (one decision), a 30 s
/// window (two), a one-hour window (two), a 60 s window whose decision was
/// rewarded and learned at once, and a 60 s window (one). A settle at
/// NOW + 61 learns the first, second and fifth models' four decisions with
/// the default reward and nothing else; one past the hour, the third
/// model's two; a third, nothing.
pub fn decision_settle_finds_each_models_due_decisions<S: Store>(s: &S) {
    let l = limits(None, None);
    // (window in seconds, decisions logged, rewarded at once)
    let plan = [
        (60, 1, false),
        (30, 2, false),
        (3600, 2, false),
        (60, 1, true),
        (60, 1, false),
    ];
    let mut models = Vec::new();
    for (k, (wait, n, rewarded)) in plan.into_iter().enumerate() {
        let user = new_user(s, &format!("settle{k}@example.com"));
        let id = logging_model(s, &user.id, &seeded(3, 5), setting(wait, Some(0.0)));
        let m = meter(&user.id, &l, NOW);
        for st in 0..n {
            let got = ok(s, s.decide(&m, &id, &Decide::new(StateRef::Int(st))));
            if rewarded {
                let d = got.decision.expect("logged").decision_id;
                ok(s, s.reward(&m, &id, reward(&d, 1.0, None, true)));
            }
        }
        models.push((user.id, id));
    }
    let pending = |k: usize| {
        let (owner, id) = &models[k];
        log_page(s, owner, id).stats.pending
    };
    let all = || (0..plan.len()).map(pending).collect::<Vec<_>>();
    let name = s.backend();
    assert_eq!(all(), [1, 2, 2, 0, 1], "[{name}] before");
    assert_eq!(ok(s, s.settle(NOW + 29)), 0, "[{name}] none due");
    assert_eq!(
        ok(s, s.settle(NOW + 61)),
        4,
        "[{name}] the 60 s and 30 s windows"
    );
    assert_eq!(all(), [0, 0, 2, 0, 0], "[{name}] after NOW + 61");
    assert_eq!(ok(s, s.settle(NOW + 3601)), 2, "[{name}] the hour's");
    assert_eq!(all(), [0, 0, 0, 0, 0], "[{name}] after the hour");
    assert_eq!(ok(s, s.settle(NOW + 7200)), 0, "[{name}] nothing left");
}
