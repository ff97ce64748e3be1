//! The SQLite store's bounded model cache under concurrent updates with a
//! budget so small that nearly every call evicts a model: many rounds of
//! threads updating a few models, each model's update count checked after
//! every round (an update applied to a copy that was then evicted or
//! overwritten by a stale reload shows up as a missing count).
#![cfg(feature = "sqlite")]

use std::sync::Barrier;

use qlearn_core::store::sqlite::{SqliteOptions, SqliteStore};
use qlearn_core::store::{Meter, NewUser, Report, Store};
use qlearn_core::tenancy::{Role, Tier, TierLimits};
use qlearn_core::{Experience, Model, ModelConfig};

const NOW: i64 = 1_790_038_400;

#[test]
fn no_update_is_lost_while_models_are_evicted() {
    const THREADS: usize = 6;
    const MODELS: usize = 5;
    const ROUNDS: usize = 40;
    const EACH: usize = 30;
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteOptions {
        // Below one model: every use past the first evicts another.
        cache_bytes: 1,
        ..SqliteOptions::default()
    };
    let s = SqliteStore::open_with(dir.path().join("q.db"), options).unwrap();
    let user = s
        .create_user(
            NewUser {
                email: "a@example.com".into(),
                password_hash: "$argon2id$fake".into(),
                tier: Tier::Free,
                role: Role::User,
            },
            NOW,
        )
        .unwrap();
    let mut cfg = ModelConfig::new(2);
    cfg.seed = Some(3);
    let model = Model::new(cfg).unwrap();
    let ids: Vec<String> = (0..MODELS)
        .map(|i| {
            s.create_model(&user.id, &format!("m{i}"), &model, None, NOW)
                .unwrap()
                .id
        })
        .collect();
    let limits = TierLimits::UNLIMITED;
    let mut want = [0u64; MODELS];
    for round in 0..ROUNDS {
        let barrier = Barrier::new(THREADS);
        std::thread::scope(|sc| {
            for t in 0..THREADS {
                let (s, ids, user, limits, barrier) = (&s, &ids, &user, &limits, &barrier);
                sc.spawn(move || {
                    let m = Meter {
                        user_id: &user.id,
                        limits,
                        now: NOW,
                    };
                    barrier.wait();
                    for i in 0..EACH {
                        let k = (i + t + round) % MODELS;
                        let exp = Experience::new(t as i64, i % 2, 1.0, t as i64).done(true);
                        if i % 7 == 0 {
                            s.model(&user.id, &ids[k]).unwrap();
                        }
                        s.update(&m, &ids[k], &[exp], Report::Outcomes).unwrap();
                    }
                });
            }
        });
        for t in 0..THREADS {
            for i in 0..EACH {
                want[(i + t + round) % MODELS] += 1;
            }
        }
        for (k, id) in ids.iter().enumerate() {
            let got = s.model(&user.id, id).unwrap().stats.updates;
            assert_eq!(got, want[k], "round {round}, model {k}: no update lost");
        }
    }
}
