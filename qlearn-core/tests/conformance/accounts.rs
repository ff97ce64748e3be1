//! Conformance checks of the operator's account calls and of atomic writes
//! (issue 12): registration writes the user and its first model in one
//! step, users can be listed and disabled, and a model patch changes only
//! its own fields under the store's lock. Listed in `conformance_tests!`
//! with the rest of the suite.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};

use qlearn_core::store::{ConfigPatch, KeyScope, ModelPatch, NewApiKey, NewUser, Store};
use qlearn_core::tenancy::{Role, Tier};
use qlearn_core::{Algorithm, Error, Exploration, Model, ModelConfig};

use super::{new_user, ok, seeded, NOW};

fn registrant(email: &str) -> NewUser {
    NewUser {
        email: email.into(),
        password_hash: format!("$argon2id$fake${email}"),
        tier: Tier::Free,
        role: Role::User,
    }
}

/// `register` creates the user and its model together, or neither: a taken
/// email adds no model, and a model the limits refuse (the second half
/// failing) leaves no user behind.
pub fn register_is_atomic<S: Store>(s: &S) {
    let b = s.backend();
    let model = Model::new(ModelConfig::new(4)).unwrap();
    let (u, info) = ok(
        s,
        s.register(registrant("a@example.com"), "default", &model, Some(3), NOW),
    );
    assert_eq!(u.created_at, NOW, "[{b}]");
    assert!(!u.disabled, "[{b}] a new user is enabled");
    assert_eq!(
        ok(s, s.user_by_email("a@example.com")),
        Some(u.clone()),
        "[{b}]"
    );
    let models = ok(s, s.models(&u.id));
    assert_eq!(models.len(), 1, "[{b}] the first model exists");
    assert_eq!(models[0].id, info.id, "[{b}]");
    assert_eq!(models[0].name, "default", "[{b}]");
    assert_eq!(models[0].config, *model.config(), "[{b}]");
    assert_eq!(
        ok(s, s.model(&u.id, &info.id)),
        info,
        "[{b}] what it returned"
    );

    let dup = s.register(registrant("a@example.com"), "default", &model, None, NOW);
    assert!(matches!(dup, Err(Error::Conflict(_))), "[{b}] {dup:?}");
    assert_eq!(ok(s, s.models(&u.id)).len(), 1, "[{b}] no second model");

    // The model half refused: no user either.
    let refused = s.register(registrant("c@example.com"), "default", &model, Some(0), NOW);
    assert!(
        matches!(refused, Err(Error::ModelLimitReached { limit: 0 })),
        "[{b}] {refused:?}"
    );
    assert_eq!(
        ok(s, s.user_by_email("c@example.com")),
        None,
        "[{b}] a registration whose model failed leaves no user"
    );
    assert_eq!(ok(s, s.users()).len(), 1, "[{b}]");
    // The email is still free.
    ok(
        s,
        s.register(
            registrant("c@example.com"),
            "default",
            &model,
            None,
            NOW + 1,
        ),
    );
}

/// `users` lists everyone oldest first; `set_disabled` flips the flag and
/// nothing else: keys, models and the rest of the record are kept, and the
/// flag is what `user`, `user_by_email` and `user_by_api_key` return.
pub fn disable_user<S: Store>(s: &S) {
    let b = s.backend();
    let a = new_user(s, "a@example.com");
    let later = ok(
        s,
        s.create_user(
            NewUser {
                email: "b@example.com".into(),
                password_hash: "$argon2id$b".into(),
                tier: Tier::Pro,
                role: Role::Admin,
            },
            NOW + 1,
        ),
    );
    let listed: Vec<String> = ok(s, s.users()).into_iter().map(|u| u.email).collect();
    assert_eq!(
        listed,
        ["a@example.com", "b@example.com"],
        "[{b}] oldest first"
    );
    let model = ok(s, s.create_model(&a.id, "m", &seeded(2, 1), None, NOW));
    let key = ok(
        s,
        s.create_api_key(
            &a.id,
            NewApiKey {
                name: "k",
                prefix: "qlk_abc",
                hash: "hash-a",
                scope: KeyScope::Full,
                expires_at: None,
            },
            NOW,
        ),
    );

    ok(s, s.set_disabled(&a.id, true));
    let got = ok(s, s.user(&a.id)).unwrap();
    assert!(got.disabled, "[{b}] disabled");
    assert_eq!(
        got,
        qlearn_core::store::User {
            disabled: true,
            ..a.clone()
        },
        "[{b}] nothing else changed"
    );
    assert!(
        ok(s, s.user_by_email("a@example.com")).unwrap().disabled,
        "[{b}]"
    );
    let (via_key, k) = ok(s, s.user_by_api_key("hash-a", NOW)).unwrap();
    assert!(via_key.disabled, "[{b}] the key lookup sees the flag");
    assert_eq!(k.id, key.id, "[{b}] the key is kept");
    assert_eq!(ok(s, s.models(&a.id))[0].id, model.id, "[{b}] models kept");
    let flags: Vec<bool> = ok(s, s.users()).into_iter().map(|u| u.disabled).collect();
    assert_eq!(flags, [true, false], "[{b}] the listing shows the flag");
    assert_eq!(
        ok(s, s.user(&later.id)).unwrap(),
        later,
        "[{b}] others untouched"
    );

    ok(s, s.set_disabled(&a.id, false));
    assert_eq!(ok(s, s.user(&a.id)).unwrap(), a, "[{b}] enabled again");
    let r = s.set_disabled("nope", true);
    assert!(matches!(r, Err(Error::NotFound(_))), "[{b}] {r:?}");
}

/// Concurrent patches of different configuration fields (and the name) of
/// one model all land: each is applied to the configuration current under
/// the store's lock, none overwrites another's field with an old value.
/// `on_reshape` runs for a patch that changes the table's width, and its
/// error refuses the patch.
pub fn concurrent_config_patches<S: Store>(s: &S) {
    let b = s.backend();
    let a = new_user(s, "a@example.com");
    let info = ok(s, s.create_model(&a.id, "m", &seeded(3, 7), None, NOW));
    let patches: Vec<ModelPatch> = vec![
        cfg(ConfigPatch {
            learning_rate: Some(0.25),
            ..ConfigPatch::default()
        }),
        cfg(ConfigPatch {
            discount_factor: Some(0.5),
            ..ConfigPatch::default()
        }),
        cfg(ConfigPatch {
            epsilon: Some(0.3),
            ..ConfigPatch::default()
        }),
        cfg(ConfigPatch {
            epsilon_decay: Some(0.75),
            ..ConfigPatch::default()
        }),
        cfg(ConfigPatch {
            min_epsilon: Some(0.05),
            ..ConfigPatch::default()
        }),
        cfg(ConfigPatch {
            initial_q: Some(1.5),
            ..ConfigPatch::default()
        }),
        cfg(ConfigPatch {
            exploration: Some(Exploration::Softmax),
            ..ConfigPatch::default()
        }),
        cfg(ConfigPatch {
            temperature: Some(2.0),
            ..ConfigPatch::default()
        }),
        cfg(ConfigPatch {
            seed: Some(Some(99)),
            ..ConfigPatch::default()
        }),
        cfg(ConfigPatch {
            action_names: Some(Some(vec!["x".into(), "y".into(), "z".into()])),
            ..ConfigPatch::default()
        }),
        ModelPatch {
            name: Some("renamed".into()),
            ..ModelPatch::default()
        },
    ];
    let barrier = Barrier::new(patches.len());
    std::thread::scope(|sc| {
        for p in patches {
            let (barrier, owner, id) = (&barrier, &a.id, &info.id);
            sc.spawn(move || {
                barrier.wait();
                ok(s, s.update_model(owner, id, p, NOW + 1));
            });
        }
    });
    let got = ok(s, s.model(&a.id, &info.id));
    let c = &got.config;
    let landed = [
        c.learning_rate == 0.25,
        c.discount_factor == 0.5,
        c.epsilon == 0.3,
        c.epsilon_decay == 0.75,
        c.min_epsilon == 0.05,
        c.initial_q == 1.5,
        c.exploration == Exploration::Softmax,
        c.temperature == 2.0,
        c.seed == Some(99),
        c.action_names.as_deref() == Some(&["x".to_owned(), "y".into(), "z".into()][..]),
        got.name == "renamed",
    ];
    assert!(
        landed.iter().all(|&l| l),
        "[{b}] every patch landed: {landed:?} {got:?}"
    );

    // A width change asks `on_reshape` first; its refusal changes nothing.
    let calls = Arc::new(AtomicUsize::new(0));
    let hook = |refuse: bool| {
        let calls = calls.clone();
        let f: Arc<dyn Fn() -> qlearn_core::Result<()> + Send + Sync> = Arc::new(move || {
            calls.fetch_add(1, Ordering::SeqCst);
            if refuse {
                Err(Error::RateLimited {
                    retry_after_secs: 1,
                })
            } else {
                Ok(())
            }
        });
        Some(f)
    };
    let to_double = |refuse| ModelPatch {
        name: Some("double".into()),
        config: Some(ConfigPatch {
            algorithm: Some(Algorithm::DoubleQLearning),
            ..ConfigPatch::default()
        }),
        on_reshape: hook(refuse),
        ..ModelPatch::default()
    };
    let r = s.update_model(&a.id, &info.id, to_double(true), NOW + 2);
    assert!(matches!(r, Err(Error::RateLimited { .. })), "[{b}] {r:?}");
    assert_eq!(ok(s, s.model(&a.id, &info.id)), got, "[{b}] refused whole");
    let same_width = ModelPatch {
        config: Some(ConfigPatch {
            algorithm: Some(Algorithm::Sarsa),
            ..ConfigPatch::default()
        }),
        on_reshape: hook(true),
        ..ModelPatch::default()
    };
    ok(s, s.update_model(&a.id, &info.id, same_width, NOW + 2));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "[{b}] not asked without a width change"
    );
    let done = ok(
        s,
        s.update_model(&a.id, &info.id, to_double(false), NOW + 3),
    );
    assert_eq!(done.config.algorithm, Algorithm::DoubleQLearning, "[{b}]");
    assert_eq!(done.name, "double", "[{b}]");
    assert_eq!(calls.load(Ordering::SeqCst), 2, "[{b}]");
}

fn cfg(c: ConfigPatch) -> ModelPatch {
    ModelPatch {
        config: Some(c),
        ..ModelPatch::default()
    }
}
