//! Conformance checks of whole-table operations (issue 11: SQLite writes
//! them in chunks between other commits), listed in `conformance_tests!`
//! with the rest of the suite.

use qlearn_core::store::{ModelPatch, Store};
use qlearn_core::{Algorithm, Error, Experience, Model, ModelConfig, StateRef};

use super::{limits, new_user, ok, update, NOW};

/// States of the big model: several of SQLite's chunks (1,024 rows).
const STATES: i64 = 5_000;

/// A model of `STATES` integer states whose values all differ.
fn big_model() -> Model {
    let mut c = ModelConfig::new(3);
    c.seed = Some(11);
    let mut m = Model::new(c).unwrap();
    for i in 0..STATES {
        m.update(&Experience::new(i, (i % 3) as usize, i as f64, i + 1))
            .unwrap();
    }
    m
}

/// Big imports, reshapes while the same model is updated, and deletions:
/// - an import over the model limit is refused and leaves nothing;
/// - a model reshaped to double Q-learning and back four times while two
///   threads update it keeps every acknowledged update (counted, its state
///   stored) and the visible values of the states nobody touched;
/// - another model of another user, updated throughout, is unaffected;
/// - a deleted big model is gone and a new import gets its own table.
pub fn whole_table_operations<S: Store>(s: &S) {
    let a = new_user(s, "a@example.com");
    let b = new_user(s, "b@example.com");
    let big = big_model();
    let one = limits(None, Some(1));
    let id = ok(s, s.create_model(&a.id, "big", &big, one.max_models, NOW)).id;
    let refused = s.create_model(&a.id, "second", &big, one.max_models, NOW);
    check!(
        s,
        matches!(refused, Err(Error::ModelLimitReached { limit: 1 })),
        "an import over the model limit is refused: {refused:?}"
    );
    check_eq!(s, ok(s, s.models(&a.id)).len(), 1, "nothing left of it");
    let other = ok(s, s.create_model(&b.id, "other", &big, None, NOW)).id;

    let l = limits(None, None);
    let mut double = big.config().clone();
    double.algorithm = Algorithm::DoubleQLearning;
    let (acked, others) = std::thread::scope(|sc| {
        let own: Vec<_> = (0..2i64)
            .map(|t| {
                let (s, a, id, l) = (s, &a, &id, &l);
                sc.spawn(move || {
                    let m = super::meter(&a.id, l, NOW);
                    (0..150)
                        .map(|k| {
                            let state = 1_000_000 + t * 1_000 + k;
                            let e = Experience::new(state, 0, 1.0, state);
                            ok(s, update(s, &m, id, &[e]));
                            state
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let theirs = {
            let (s, b, other, l) = (s, &b, &other, &l);
            sc.spawn(move || {
                let m = super::meter(&b.id, l, NOW);
                for k in 0..300 {
                    let e = Experience::new(STATES + k, 0, 1.0, STATES + k);
                    ok(s, update(s, &m, other, &[e]));
                }
                300u64
            })
        };
        for round in 0..4 {
            let mut c = big.config().clone();
            if round % 2 == 0 {
                c = double.clone();
            }
            let patch = ModelPatch {
                config: Some(c.into()),
                ..ModelPatch::default()
            };
            ok(s, s.update_model(&a.id, &id, patch, NOW));
        }
        let acked: Vec<i64> = own
            .into_iter()
            .flat_map(|h| h.join().expect("own updates"))
            .collect();
        (acked, theirs.join().expect("other tenant"))
    });
    let info = ok(s, s.model(&a.id, &id));
    check_eq!(s, info.config.algorithm, Algorithm::QLearning, "last round");
    check_eq!(
        s,
        info.stats.updates,
        big.stats().updates + acked.len() as u64,
        "every update during the reshapes counted"
    );
    let m = ok(s, s.export_model(&a.id, &id));
    check_eq!(
        s,
        m.len(),
        STATES as usize + acked.len(),
        "every state kept"
    );
    for &state in &acked {
        check!(
            s,
            m.table().keys().any(|k| k == StateRef::Int(state)),
            "state {state} of an acknowledged update kept"
        );
    }
    for i in (0..STATES).step_by(7) {
        check_eq!(
            s,
            m.q_values(StateRef::Int(i)).unwrap(),
            big.q_values(StateRef::Int(i)).unwrap(),
            "state {i} through four reshapes"
        );
    }
    let o = ok(s, s.model(&b.id, &other));
    check_eq!(s, o.stats.updates, big.stats().updates + others);

    ok(s, s.delete_model(&a.id, &id));
    check!(
        s,
        matches!(s.model(&a.id, &id), Err(Error::NotFound(_))),
        "deleted"
    );
    let again = ok(s, s.create_model(&a.id, "again", &big, one.max_models, NOW)).id;
    let back = ok(s, s.export_model(&a.id, &again));
    check_eq!(s, back.to_bytes().unwrap(), big.to_bytes().unwrap());
    let theirs = ok(s, s.export_model(&b.id, &other));
    check_eq!(
        s,
        theirs.len(),
        STATES as usize + 300,
        "the other model whole"
    );
}
