//! Conformance check of the behaviour policy's probabilities served by a
//! store (`Store::action_probabilities`, behind `POST /predict/probabilities`),
//! listed in `conformance_tests!` with the rest of the suite.

use qlearn_core::store::Store;
use qlearn_core::tenancy::BillingMonth;
use qlearn_core::{Error, Experience, Exploration, Model, ModelConfig, StateRef};

use super::{limits, meter, new_user, ok, seeded, update, NOW};

/// A store's probabilities are the engine's on the same model (trained,
/// ties, masks, softmax, unseen states, explore off), metered one call
/// each, and change nothing (the exported model stays bit-identical, its
/// random generator included); invalid input, another user's model and an
/// exhausted quota are refused without metering.
pub fn action_probabilities_are_the_engines<S: Store>(s: &S) {
    let a = new_user(s, "a@example.com");
    let b = new_user(s, "b@example.com");
    let mut soft = ModelConfig::new(3);
    soft.exploration = Exploration::Softmax;
    soft.temperature = 0.5;
    soft.seed = Some(3);
    let models = [seeded(4, 9), Model::new(soft).unwrap()];
    let l = limits(Some(1_000), None);
    let m = meter(&a.id, &l, NOW);
    let mut calls = 0;
    for mut local in models {
        let info = ok(s, s.create_model(&a.id, "m", &local, None, NOW));
        let exps = [
            Experience::new(1, 2, 1.0, 2),
            Experience::new(2, 0, -0.5, 1),
            // Two equal best actions in state 3 (a tie).
            Experience::new(3, 0, 0.5, 3).done(true),
            Experience::new(3, 1, 0.5, 3).done(true),
        ];
        ok(s, update(s, &m, &info.id, &exps));
        local.update_batch(&exps).unwrap();
        calls += exps.len() as u64;
        let before = ok(s, s.export_model(&a.id, &info.id)).to_bytes().unwrap();
        let masks: [Option<&[usize]>; 3] = [None, Some(&[0, 2]), Some(&[1])];
        for st in [1, 2, 3, 77] {
            for mask in masks {
                for explore in [true, false] {
                    let got = ok(
                        s,
                        s.action_probabilities(&m, &info.id, StateRef::Int(st), mask, explore),
                    );
                    let want = local.action_probabilities(st, mask, explore).unwrap();
                    check_eq!(s, got, want, "state {st}, mask {mask:?}, explore {explore}");
                    calls += 1;
                }
            }
        }
        let after = ok(s, s.export_model(&a.id, &info.id)).to_bytes().unwrap();
        check!(
            s,
            before == after,
            "probabilities change nothing of the model"
        );
        let nan = [f64::NAN];
        let bad = [
            s.action_probabilities(&m, &info.id, StateRef::Array(&nan), None, true),
            s.action_probabilities(&m, &info.id, StateRef::Int(1), Some(&[]), true),
            s.action_probabilities(&m, &info.id, StateRef::Int(1), Some(&[9]), true),
        ];
        for r in bad {
            let typed = matches!(
                r,
                Err(Error::InvalidState { .. } | Error::InvalidAction { .. })
            );
            check!(s, typed, "invalid input refused by kind: {r:?}");
        }
        let mb = meter(&b.id, &l, NOW);
        let r = s.action_probabilities(&mb, &info.id, StateRef::Int(1), None, true);
        check!(
            s,
            matches!(r, Err(Error::NotFound(_))),
            "another user's model: {r:?}"
        );
    }
    let month = BillingMonth::from_unix(NOW);
    check_eq!(
        s,
        ok(s, s.usage(&a.id, month)).calls,
        calls,
        "one call each"
    );
    check_eq!(s, ok(s, s.usage(&b.id, month)).calls, 0);
    // At the quota: refused, not counted.
    let tight = limits(Some(calls), None);
    let mt = meter(&a.id, &tight, NOW);
    let id = ok(s, s.models(&a.id))[0].id.clone();
    let r = s.action_probabilities(&mt, &id, StateRef::Int(1), None, true);
    check!(
        s,
        matches!(r, Err(Error::QuotaExceeded { .. })),
        "over quota: {r:?}"
    );
    check_eq!(s, ok(s, s.usage(&a.id, month)).calls, calls);
}
