//! The storage conformance suite: written once, generic over [`Store`], run
//! against every backend (`store_memory.rs`, `store_sqlite.rs`,
//! `store_postgres.rs`). Each check names the backend in its failure
//! message (`[sqlite] ...`).
//!
//! Every function takes a fresh, empty store (its own file or schema), so
//! the functions run in parallel. The list of checks is written once, in
//! [`conformance_tests!`]: each backend file invokes it with its way of
//! opening a store, and gets one `#[test]` per check, plus a test that the
//! list names every check of this file.
#![allow(dead_code)]

mod accounts;
mod billing;
mod decision_concurrency;
mod decision_errors;
mod decision_settle;
mod decisions;
pub use accounts::*;
pub use billing::*;
pub use decision_concurrency::*;
pub use decision_errors::*;
pub use decision_settle::*;
pub use decisions::*;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Barrier;

use qlearn_core::model::Counters;
use qlearn_core::store::{
    CallKind, KeyScope, Meter, ModelPatch, NewApiKey, NewUser, Report, Store, User,
};
use qlearn_core::tenancy::{BillingMonth, Role, Tier, TierLimits};
use qlearn_core::{
    Algorithm, Error, Experience, Model, ModelConfig, Result, StateKey, StateRef, UpdateOutcome,
};

/// One `#[test]` per conformance check, each running the check on a fresh
/// store: `$with` is a function `fn(impl FnOnce(&Backend))` that opens the
/// store (or skips loudly), runs the check on it and cleans up. Adding a
/// check here runs it on every backend; `every_check_is_listed` fails when
/// a check of this file is missing from the list.
macro_rules! conformance_tests {
    ($with:path) => {
        $crate::conformance::conformance_tests!(@each $with;
            settings,
            users,
            api_keys,
            api_key_scope_and_expiry,
            models,
            predict_and_update,
            action_probabilities_are_the_engines,
            update_reports_touched_rows,
            validation_costs_nothing,
            state_limit,
            quota,
            tenant_isolation,
            concurrent_updates,
            concurrent_quota,
            concurrent_invalid_calls,
            concurrent_model_limit,
            eviction_under_concurrent_updates,
            decisions_learn_like_updates,
            decision_idempotency,
            decision_deadline,
            decision_metering,
            decision_isolation,
            decision_state_limit,
            decision_counts_order_and_retention,
            decision_late_step_after_next_learned,
            decision_overflow_fails_only_its_call,
            decision_settle_finds_each_models_due_decisions,
            decision_settle_finds_decisions_logged_since_the_last_pass,
            decision_settle_works_through_a_backlog_in_chunks,
            decision_listing_filters,
            decision_episodes,
            decision_baseline_actions,
            decisions_concurrent_on_one_model,
            change_feed,
            register_is_atomic,
            disable_user,
            concurrent_config_patches,
            shared_buckets,
            whole_table_operations,
            shared_streams,
            usage_by_kind,
            overage_at_the_boundary,
            concurrent_overage,
            billing_events,
            read_only_over_plan,
            evaluation_jobs_isolation_and_listing,
            evaluation_limits_under_concurrency,
            evaluation_usage,
            evaluation_claims,
            evaluation_claims_are_fair_between_owners,
            evaluation_decision_keyset,
            evaluation_tombstones,
            evaluation_model_deletion,
            evaluation_model_deletion_past_a_chunk,
            evaluation_finished_cap,
            evaluation_creation_races_model_deletion,
        );
    };
    (@each $with:path; $($check:ident),+ $(,)?) => {
        $(
            #[test]
            fn $check() {
                $with(|s| $crate::conformance::$check(s));
            }
        )+

        #[test]
        fn every_check_is_listed() {
            $crate::conformance::assert_listed(&[$(stringify!($check)),+]);
        }
    };
}
pub(crate) use conformance_tests;

/// Fails unless `listed` names exactly the checks of this file (every
/// `pub fn name<S: Store>(s: &S)`), so no check is silently skipped.
pub fn assert_listed(listed: &[&str]) {
    let source = concat!(
        include_str!("mod.rs"),
        include_str!("decisions.rs"),
        include_str!("decision_concurrency.rs"),
        include_str!("decision_errors.rs"),
        include_str!("decision_settle.rs"),
        include_str!("decision_listing.rs"),
        include_str!("changes.rs"),
        include_str!("accounts.rs"),
        include_str!("tables.rs"),
        include_str!("probabilities.rs"),
        include_str!("usage.rs"),
        include_str!("billing.rs"),
        include_str!("evaluations.rs"),
        include_str!("evaluation_retention.rs")
    );
    let mut defined: Vec<&str> = source
        .lines()
        .filter_map(|l| {
            l.strip_prefix("pub fn ")?
                .strip_suffix("<S: Store>(s: &S) {")
        })
        .collect();
    let mut listed = listed.to_vec();
    defined.sort_unstable();
    listed.sort_unstable();
    assert!(defined.len() >= 12, "the suite has its checks: {defined:?}");
    assert_eq!(listed, defined, "conformance_tests! lists every check once");
}

/// One metered update reporting only its outcomes (what most checks need).
pub fn update<S: Store + ?Sized>(
    s: &S,
    m: &Meter<'_>,
    model_id: &str,
    exps: &[Experience<'_>],
) -> Result<Vec<UpdateOutcome>> {
    s.update(m, model_id, exps, Report::Outcomes)
        .map(|u| u.outcomes)
}

/// 2026-09-21T00:53:20Z: a fixed "now" so months and days are known.
pub const NOW: i64 = 1_790_038_400;

/// Unwraps, naming the backend and the error on failure.
#[track_caller]
pub fn ok<T, S: Store + ?Sized>(s: &S, r: Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("[{}] unexpected error: {e:?}", s.backend()),
    }
}

macro_rules! check {
    ($s:expr, $cond:expr, $($fmt:tt)+) => {
        assert!($cond, "[{}] {}", $s.backend(), format!($($fmt)+))
    };
}

macro_rules! check_eq {
    ($s:expr, $a:expr, $b:expr) => {
        assert_eq!($a, $b, "[{}] {} == {}", $s.backend(), stringify!($a), stringify!($b))
    };
    ($s:expr, $a:expr, $b:expr, $($fmt:tt)+) => {
        assert_eq!($a, $b, "[{}] {}", $s.backend(), format!($($fmt)+))
    };
}

// After the macros, which it uses.
mod changes;
pub use changes::*;
mod decision_listing;
pub use decision_listing::*;
mod evaluation_retention;
mod evaluations;
pub use evaluation_retention::*;
pub use evaluations::*;
mod probabilities;
mod tables;
pub use probabilities::*;
pub use tables::*;
mod usage;
pub use usage::*;

/// Limits with `calls` monthly calls and `models` models.
pub fn limits(calls: Option<u64>, models: Option<u32>) -> TierLimits {
    TierLimits {
        monthly_calls: calls,
        max_models: models,
        rate_per_second: 100,
        burst: 100,
        ..TierLimits::UNLIMITED
    }
}

pub fn new_user<S: Store + ?Sized>(s: &S, email: &str) -> User {
    ok(
        s,
        s.create_user(
            NewUser {
                email: email.into(),
                password_hash: format!("$argon2id$fake${email}"),
                tier: Tier::Free,
                role: Role::User,
            },
            NOW,
        ),
    )
}

/// A seeded model (reproducible exploration) with `n` actions.
pub fn seeded(n: usize, seed: u64) -> Model {
    let mut c = ModelConfig::new(n);
    c.seed = Some(seed);
    c.epsilon = 0.3;
    c.epsilon_decay = 0.9;
    Model::new(c).unwrap()
}

pub(crate) fn meter<'a>(user: &'a str, l: &'a TierLimits, now: i64) -> Meter<'a> {
    Meter {
        user_id: user,
        limits: l,
        now,
    }
}

/// Settings: absent, then the first value set wins.
pub fn settings<S: Store>(s: &S) {
    check_eq!(s, ok(s, s.setting("jwt_secret")), None);
    check_eq!(s, ok(s, s.set_setting_if_absent("jwt_secret", "a")), "a");
    check_eq!(s, ok(s, s.set_setting_if_absent("jwt_secret", "b")), "a");
    check_eq!(s, ok(s, s.setting("jwt_secret")), Some("a".to_string()));
    check_eq!(s, ok(s, s.setting("other")), None);
}

/// Users: create, find, unique emails, tier, role and password changes.
pub fn users<S: Store>(s: &S) {
    let a = new_user(s, "a@example.com");
    check!(s, a.id.len() >= 11, "ids are long random strings: {}", a.id);
    check_eq!(s, a.created_at, NOW);
    check_eq!(s, a.password_changed_at, NOW);
    let dup = s.create_user(
        NewUser {
            email: "a@example.com".into(),
            password_hash: "x".into(),
            tier: Tier::Pro,
            role: Role::User,
        },
        NOW,
    );
    check!(
        s,
        matches!(dup, Err(Error::Conflict(_))),
        "duplicate email: {dup:?}"
    );
    let b = new_user(s, "b@example.com");
    check!(s, a.id != b.id, "distinct ids");
    check_eq!(s, ok(s, s.user(&a.id)), Some(a.clone()));
    check_eq!(s, ok(s, s.user_by_email("a@example.com")), Some(a.clone()));
    check_eq!(s, ok(s, s.user_by_email("nobody@example.com")), None);
    check_eq!(s, ok(s, s.user("no-such-id")), None);

    ok(s, s.set_tier(&a.id, Tier::Pro));
    ok(s, s.set_role(&a.id, Role::Admin));
    ok(s, s.set_password(&a.id, "$argon2id$new", NOW + 5));
    let a2 = ok(s, s.user(&a.id)).unwrap();
    check_eq!(s, a2.tier, Tier::Pro);
    check_eq!(s, a2.role, Role::Admin);
    check_eq!(s, a2.password_hash, "$argon2id$new");
    check_eq!(s, a2.password_changed_at, NOW + 5);
    check_eq!(s, a2.created_at, NOW);
    check_eq!(
        s,
        ok(s, s.user(&b.id)).unwrap(),
        b,
        "other users are untouched"
    );
    for r in [
        s.set_tier("nope", Tier::Pro),
        s.set_role("nope", Role::Admin),
        s.set_password("nope", "h", NOW),
    ] {
        check!(
            s,
            matches!(r, Err(Error::NotFound(_))),
            "unknown user: {r:?}"
        );
    }
}

/// API keys: stored by hash, listed oldest first, touched at most once a
/// minute, revocable only by their owner.
pub fn api_keys<S: Store>(s: &S) {
    let a = new_user(s, "a@example.com");
    let b = new_user(s, "b@example.com");
    let k1 = ok(
        s,
        s.create_api_key(&a.id, full_key("ci", "qk_abc", "hash1"), NOW),
    );
    let k2 = ok(
        s,
        s.create_api_key(&a.id, full_key("laptop", "qk_def", "hash2"), NOW + 1),
    );
    check_eq!(s, k1.last_used_at, None);
    check_eq!(s, k1.user_id, a.id);
    let dup = s.create_api_key(&b.id, full_key("x", "qk", "hash1"), NOW);
    check!(
        s,
        matches!(dup, Err(Error::Conflict(_))),
        "duplicate hash: {dup:?}"
    );
    let unknown = s.create_api_key("nope", full_key("x", "qk", "hash9"), NOW);
    check!(
        s,
        matches!(unknown, Err(Error::NotFound(_))),
        "unknown user: {unknown:?}"
    );
    check_eq!(s, ok(s, s.api_keys(&a.id)), vec![k1.clone(), k2.clone()]);
    check_eq!(s, ok(s, s.api_keys(&b.id)), vec![]);

    let (u, k) = ok(s, s.user_by_api_key("hash1", NOW + 10)).unwrap();
    check_eq!(s, u, a);
    check_eq!(s, k.last_used_at, Some(NOW + 10));
    // Within a minute the stored time does not move...
    let (_, k) = ok(s, s.user_by_api_key("hash1", NOW + 30)).unwrap();
    check_eq!(s, k.last_used_at, Some(NOW + 10));
    // ... after a minute it does.
    let (_, k) = ok(s, s.user_by_api_key("hash1", NOW + 75)).unwrap();
    check_eq!(s, k.last_used_at, Some(NOW + 75));
    check_eq!(s, ok(s, s.api_keys(&a.id))[0].last_used_at, Some(NOW + 75));
    check!(
        s,
        ok(s, s.user_by_api_key("nope", NOW)).is_none(),
        "unknown hash"
    );

    let r = s.delete_api_key(&b.id, &k1.id);
    check!(
        s,
        matches!(r, Err(Error::NotFound(_))),
        "another user's key: {r:?}"
    );
    ok(s, s.delete_api_key(&a.id, &k1.id));
    check!(
        s,
        ok(s, s.user_by_api_key("hash1", NOW)).is_none(),
        "revoked"
    );
    check_eq!(s, ok(s, s.api_keys(&a.id)), vec![k2]);
    let r = s.delete_api_key(&a.id, &k1.id);
    check!(
        s,
        matches!(r, Err(Error::NotFound(_))),
        "deleted twice: {r:?}"
    );
}

/// A key of every right but admin that never expires (what most checks need).
pub(crate) fn full_key<'a>(name: &'a str, prefix: &'a str, hash: &'a str) -> NewApiKey<'a> {
    NewApiKey {
        name,
        prefix,
        hash,
        scope: KeyScope::Full,
        expires_at: None,
    }
}

/// API keys keep their scope and expiry (listed and found by hash), and
/// `ApiKey::usable` refuses an expired key and a key older than the owner's
/// last password change.
pub fn api_key_scope_and_expiry<S: Store>(s: &S) {
    let a = new_user(s, "a@example.com");
    for (i, scope) in KeyScope::ALL.into_iter().enumerate() {
        let hash = format!("scoped-{i}");
        let expires_at = (i % 2 == 0).then_some(NOW + 100 + i as i64);
        let key = NewApiKey {
            name: "k",
            prefix: "qk",
            hash: &hash,
            scope,
            expires_at,
        };
        let k = ok(s, s.create_api_key(&a.id, key, NOW));
        check_eq!(s, (k.scope, k.expires_at), (scope, expires_at));
        let (_, found) = ok(s, s.user_by_api_key(&hash, NOW)).unwrap();
        check_eq!(s, (found.scope, found.expires_at), (scope, expires_at));
    }
    let listed: Vec<_> = ok(s, s.api_keys(&a.id))
        .into_iter()
        .map(|k| (k.scope, k.expires_at))
        .collect();
    check_eq!(
        s,
        listed.len(),
        KeyScope::ALL.len(),
        "every scoped key listed"
    );
    for (scope, expires) in listed {
        let want = KeyScope::ALL
            .iter()
            .position(|&k| k == scope)
            .and_then(|i| (i % 2 == 0).then_some(NOW + 100 + i as i64));
        check_eq!(s, expires, want, "{scope} key's expiry as listed");
    }

    // Expiry: usable until the second it expires.
    let (user, read) = ok(s, s.user_by_api_key("scoped-0", NOW)).unwrap();
    check!(s, read.usable(&user, NOW + 99), "before expiry");
    check!(s, !read.usable(&user, NOW + 100), "at expiry");
    let (_, engine) = ok(s, s.user_by_api_key("scoped-1", NOW)).unwrap();
    check!(s, engine.usable(&user, NOW + 1_000_000), "no expiry");

    // A password change deletes the keys made before it (even in the same
    // second), not after, and no other user's.
    let b = new_user(s, "b@example.com");
    ok(
        s,
        s.create_api_key(&b.id, full_key("b", "qk", "b-key"), NOW),
    );
    let (before, old) = ok(s, s.user_by_api_key("scoped-1", NOW)).unwrap();
    ok(s, s.set_password(&a.id, "new-hash", NOW));
    check!(
        s,
        ok(s, s.user_by_api_key("scoped-1", NOW)).is_none(),
        "revoked by the password change"
    );
    check_eq!(s, ok(s, s.api_keys(&a.id)), vec![]);
    check!(
        s,
        ok(s, s.user_by_api_key("b-key", NOW)).is_some(),
        "another user's key stays"
    );
    let user = ok(s, s.user(&a.id)).unwrap();
    check_eq!(s, user.password_changed_at, NOW);
    check!(s, old.usable(&before, NOW), "usable before the change");
    ok(s, s.set_password(&a.id, "newer-hash", NOW + 50));
    let user = ok(s, s.user(&a.id)).unwrap();
    check!(
        s,
        !old.usable(&user, NOW + 60),
        "a record older than the password"
    );
    let newer = ok(
        s,
        s.create_api_key(&a.id, full_key("new", "qk", "after-change"), NOW + 50),
    );
    check!(s, newer.usable(&user, NOW + 60), "created after the change");
    check!(s, !newer.usable(&b, NOW + 60), "another user's key");
    check_eq!(s, ok(s, s.api_keys(&a.id)).len(), 1);
}

/// Models: create, list, read, rename, reconfigure, page, export, delete.
pub fn models<S: Store>(s: &S) {
    let a = new_user(s, "a@example.com");
    let mut m = seeded(3, 7);
    m.update(&Experience::new(1, 2, 5.0, 2)).unwrap();
    m.update(&Experience::new("x", 0, -1.0, 1).done(true))
        .unwrap();
    let i1 = ok(s, s.create_model(&a.id, "first", &m, None, NOW));
    let i2 = ok(
        s,
        s.create_model(&a.id, "second", &seeded(2, 1), None, NOW + 1),
    );
    check_eq!(s, i1.owner, a.id);
    check_eq!(s, i1.name, "first");
    check_eq!(s, &i1.config, m.config());
    check_eq!(s, i1.stats, m.stats());
    check_eq!(s, i1.created_at, NOW);
    check_eq!(s, i1.updated_at, NOW);
    let list = ok(s, s.models(&a.id));
    check_eq!(s, list, vec![i1.clone(), i2.clone()], "oldest first");
    check_eq!(s, ok(s, s.model(&a.id, &i1.id)), i1.clone());
    let r = s.model(&a.id, "no-such-model");
    check!(
        s,
        matches!(r, Err(Error::NotFound(_))),
        "unknown model: {r:?}"
    );

    // Export is the same model, byte for byte.
    let e = ok(s, s.export_model(&a.id, &i1.id));
    check_eq!(s, e.to_bytes().unwrap(), m.to_bytes().unwrap(), "export");

    // Q-table pages in insertion order.
    let page = ok(s, s.q_table(&a.id, &i1.id, 0, 100));
    check_eq!(s, page.total, 2);
    check_eq!(s, page.rows, m.rows(0, 100));
    let p2 = ok(s, s.q_table(&a.id, &i1.id, 1, 1));
    check_eq!(s, p2.rows, m.rows(1, 1));
    check_eq!(s, p2.total, 2);
    check_eq!(s, ok(s, s.q_table(&a.id, &i1.id, 5, 10)).rows, vec![]);

    // Rename and reconfigure.
    let mut cfg = m.config().clone();
    cfg.learning_rate = 0.5;
    cfg.epsilon = 0.05;
    let u = ok(
        s,
        s.update_model(
            &a.id,
            &i1.id,
            ModelPatch {
                name: Some("renamed".into()),
                config: Some(cfg.clone().into()),
                decisions: None,
                on_reshape: None,
            },
            NOW + 9,
        ),
    );
    check_eq!(s, u.name, "renamed");
    check_eq!(s, u.config, cfg);
    check_eq!(
        s,
        u.stats.epsilon,
        0.05,
        "a new epsilon resets the current one"
    );
    check_eq!(s, u.updated_at, NOW + 9);
    check_eq!(s, ok(s, s.model(&a.id, &i1.id)), u.clone());
    // Invalid changes are refused and change nothing.
    let mut bad = cfg.clone();
    bad.learning_rate = 1.5;
    let r = s.update_model(
        &a.id,
        &i1.id,
        ModelPatch {
            name: Some("nope".into()),
            config: Some(bad.into()),
            decisions: None,
            on_reshape: None,
        },
        NOW + 10,
    );
    check!(s, matches!(r, Err(Error::InvalidField { .. })), "{r:?}");
    let mut bad = cfg.clone();
    bad.n_actions = 4;
    let r = s.update_model(
        &a.id,
        &i1.id,
        ModelPatch {
            name: None,
            config: Some(bad.into()),
            decisions: None,
            on_reshape: None,
        },
        NOW + 10,
    );
    check!(s, matches!(r, Err(Error::InvalidField { .. })), "{r:?}");
    check_eq!(s, ok(s, s.model(&a.id, &i1.id)), u.clone(), "unchanged");

    // Switching to double Q-learning and back keeps the visible values.
    let before = ok(s, s.q_table(&a.id, &i1.id, 0, 10)).rows;
    let mut dq = cfg.clone();
    dq.algorithm = Algorithm::DoubleQLearning;
    ok(
        s,
        s.update_model(
            &a.id,
            &i1.id,
            ModelPatch {
                name: None,
                config: Some(dq.into()),
                decisions: None,
                on_reshape: None,
            },
            NOW + 11,
        ),
    );
    check_eq!(
        s,
        ok(s, s.q_table(&a.id, &i1.id, 0, 10)).rows,
        before.clone()
    );
    let meter_l = limits(None, None);
    ok(
        s,
        update(
            s,
            &meter(&a.id, &meter_l, NOW + 12),
            &i1.id,
            &[Experience::new(1, 0, 1.0, 2)],
        ),
    );
    ok(
        s,
        s.update_model(
            &a.id,
            &i1.id,
            ModelPatch {
                name: None,
                config: Some(cfg.clone().into()),
                decisions: None,
                on_reshape: None,
            },
            NOW + 13,
        ),
    );
    let back = ok(s, s.export_model(&a.id, &i1.id));
    check_eq!(s, back.config(), &cfg);
    check_eq!(s, back.table().width(), 3);

    // Delete: gone for every route, the other model stays.
    ok(s, s.delete_model(&a.id, &i1.id));
    for r in [
        s.model(&a.id, &i1.id).map(|_| ()),
        s.export_model(&a.id, &i1.id).map(|_| ()),
        s.q_table(&a.id, &i1.id, 0, 1).map(|_| ()),
        s.delete_model(&a.id, &i1.id),
    ] {
        check!(s, matches!(r, Err(Error::NotFound(_))), "deleted: {r:?}");
    }
    let r = s.predict(
        &meter(&a.id, &meter_l, NOW),
        &i1.id,
        StateRef::Int(1),
        false,
        None,
    );
    check!(s, matches!(r, Err(Error::NotFound(_))), "deleted: {r:?}");
    check_eq!(s, ok(s, s.models(&a.id)), vec![i2]);
}

/// Metered calls behave exactly as the engine on a local copy of the model
/// (same seed: same actions, Q-values, epsilon and counters), and are
/// counted per day.
pub fn predict_and_update<S: Store>(s: &S) {
    let a = new_user(s, "a@example.com");
    let mut local = seeded(4, 42);
    let info = ok(s, s.create_model(&a.id, "m", &local, None, NOW));
    let l = limits(Some(1_000), None);
    let m = meter(&a.id, &l, NOW);
    let arr = [0.5, -0.0, 2.0];
    let states = [
        StateRef::Int(3),
        StateRef::Str("s1"),
        StateRef::Array(&arr),
        StateRef::Int(-8),
    ];
    for round in 0..25usize {
        let st = states[round % 4];
        let next = states[(round + 1) % 4];
        let p = ok(s, s.predict(&m, &info.id, st, true, None));
        let want = local.predict_full(st, true, None).unwrap();
        check_eq!(s, p, want, "prediction {round}");
        let mask = [1usize, 3];
        let p = ok(s, s.predict(&m, &info.id, st, true, Some(&mask)));
        let want = local.predict_full(st, true, Some(&mask)).unwrap();
        check_eq!(s, p, want, "masked prediction {round}");
        check!(s, mask.contains(&p.action), "mask respected");
        let exps = [
            Experience::new(st, p.action, round as f64 - 3.0, next).done(round % 5 == 4),
            Experience::new(next, 2, 0.25, st).truncated(round % 7 == 6),
        ];
        let out = ok(s, update(s, &m, &info.id, &exps));
        let want = local.update_batch(&exps).unwrap();
        check_eq!(s, out, want, "update {round}");
    }
    let info2 = ok(s, s.model(&a.id, &info.id));
    check_eq!(s, info2.stats, local.stats());
    check_eq!(s, info2.stats.predictions, 50);
    check_eq!(s, info2.stats.updates, 50);
    check!(s, info2.stats.episodes > 0, "episodes counted");
    check!(s, info2.stats.epsilon < 0.3, "epsilon decayed");
    check_eq!(s, info2.updated_at, NOW);
    let e = ok(s, s.export_model(&a.id, &info.id));
    check_eq!(
        s,
        e.to_bytes().unwrap(),
        local.to_bytes().unwrap(),
        "same model"
    );
    let page = ok(s, s.q_table(&a.id, &info.id, 0, 100));
    check_eq!(s, page.rows, local.rows(0, 100));

    // 100 calls today (predict 1 each, update 2 each).
    let month = BillingMonth::from_unix(NOW);
    let u = ok(s, s.usage(&a.id, month));
    check_eq!(s, u.calls, 100);
    check_eq!(s, u.per_day.len(), month.days() as usize);
    let day = month.day_of(NOW) as usize - 1;
    check_eq!(s, u.per_day[day], 100);
    // A call tomorrow counts on tomorrow.
    let tomorrow = meter(&a.id, &l, NOW + 86_400);
    ok(
        s,
        s.predict(&tomorrow, &info.id, StateRef::Int(1), false, None),
    );
    let u = ok(s, s.usage(&a.id, month));
    check_eq!(s, u.calls, 101);
    check_eq!(s, u.per_day[day + 1], 1);
    // An empty batch is a no-op.
    check_eq!(s, ok(s, update(s, &m, &info.id, &[])), vec![]);
    check_eq!(s, ok(s, s.usage(&a.id, month)).calls, 101);
}

/// An update asked for its rows returns the rows it wrote (each state
/// once) as `export_model` shows them right after, the state row of each
/// experience, and the model's statistics; asked for outcomes only, none.
pub fn update_reports_touched_rows<S: Store>(s: &S) {
    let a = new_user(s, "a@example.com");
    let mut c = ModelConfig::new(3);
    c.seed = Some(7);
    c.initial_q = 0.5;
    c.algorithm = Algorithm::DoubleQLearning;
    let info = ok(
        s,
        s.create_model(&a.id, "m", &Model::new(c).unwrap(), None, NOW),
    );
    let l = limits(None, None);
    let m = meter(&a.id, &l, NOW);
    let arr = [1.5, -0.0];
    let exps = [
        Experience::new(StateRef::Str("s"), 1, 2.0, StateRef::Int(4)),
        Experience::new(StateRef::Array(&arr), 2, -1.0, StateRef::Str("s")),
        Experience::new(StateRef::Str("s"), 0, 0.5, StateRef::Array(&arr)).done(true),
    ];
    // Rows already there before the call are not reported unless written.
    ok(s, update(s, &m, &info.id, &[Experience::new(9, 0, 1.0, 9)]));
    let done = ok(s, s.update(&m, &info.id, &exps, Report::Touched));
    let t = done.touched.expect("rows were asked for");
    check_eq!(s, done.outcomes.len(), 3);
    let export = ok(s, s.export_model(&a.id, &info.id));
    let keys: Vec<&StateKey> = t.rows.iter().map(|(k, _)| k).collect();
    check_eq!(
        s,
        keys,
        vec![
            &StateKey::Str("s".into()),
            &StateKey::Array(vec![1.5, 0.0].into())
        ],
        "each written row once, in order of first write"
    );
    for (k, q) in &t.rows {
        check_eq!(
            s,
            Some(q.clone()),
            export.q_values(k.as_ref()).ok(),
            "row {k:?}"
        );
    }
    check_eq!(s, t.state_rows, vec![0, 1, 0]);
    for (i, x) in exps.iter().enumerate() {
        let want = export.q_values(x.state).unwrap();
        check_eq!(s, t.state_q_values(i), Some(&want[..]), "experience {i}");
    }
    check_eq!(s, t.stats, export.stats());
    let plain = ok(s, s.update(&m, &info.id, &exps[..1], Report::Outcomes));
    check!(s, plain.touched.is_none(), "nothing copied unless asked");
    let empty = ok(s, s.update(&m, &info.id, &[], Report::Touched));
    check_eq!(s, empty.touched.map(|t| t.rows.len()), Some(0));
}

/// Invalid input is refused before the quota is touched and changes
/// nothing; a bad item in a batch rejects the whole batch.
pub fn validation_costs_nothing<S: Store>(s: &S) {
    let a = new_user(s, "a@example.com");
    let info = ok(s, s.create_model(&a.id, "m", &seeded(3, 1), None, NOW));
    let l = limits(Some(10), None);
    let m = meter(&a.id, &l, NOW);
    let nan = [f64::NAN];
    let bad_predicts = [
        s.predict(&m, &info.id, StateRef::Array(&nan), false, None),
        s.predict(&m, &info.id, StateRef::Array(&[]), false, None),
        s.predict(&m, &info.id, StateRef::Int(1), false, Some(&[])),
        s.predict(&m, &info.id, StateRef::Int(1), false, Some(&[3])),
    ];
    // Each refused with its specific kind (the HTTP code depends on it).
    let kinds = ["state", "state", "action", "action"];
    for (r, kind) in bad_predicts.into_iter().zip(kinds) {
        let right = match (kind, &r) {
            ("state", Err(Error::InvalidState { field, .. })) => field == "state",
            ("action", Err(Error::InvalidAction { field, .. })) => field == "allowed_actions",
            _ => false,
        };
        check!(s, right, "bad predict: expected Invalid{kind}, got {r:?}");
    }
    let batch = [
        Experience::new(1, 0, 1.0, 2),
        Experience::new(2, 1, 1.0, 3),
        Experience::new(3, 7, 1.0, 4),
    ];
    let r = update(s, &m, &info.id, &batch);
    match r {
        Err(Error::InvalidAction { message: msg, .. }) => {
            check!(s, msg.contains("experiences[2]"), "names the item: {msg}")
        }
        other => panic!("[{}] expected InvalidAction, got {other:?}", s.backend()),
    }
    let r = update(s, &m, &info.id, &[Experience::new(1, 0, f64::INFINITY, 2)]);
    check!(s, matches!(r, Err(Error::InvalidField { .. })), "{r:?}");
    let month = BillingMonth::from_unix(NOW);
    check_eq!(s, ok(s, s.usage(&a.id, month)).calls, 0, "nothing metered");
    let info2 = ok(s, s.model(&a.id, &info.id));
    check_eq!(s, info2.stats, info.stats, "nothing applied");
    check_eq!(s, ok(s, s.q_table(&a.id, &info.id, 0, 10)).total, 0);
}

/// The tier's states per model: an update that would add states past it is
/// refused whole (typed error naming the counts), costs nothing and changes
/// nothing; updates of stored states go on at the limit.
pub fn state_limit<S: Store>(s: &S) {
    let a = new_user(s, "a@example.com");
    let info = ok(s, s.create_model(&a.id, "m", &seeded(2, 5), None, NOW));
    let mut l = limits(Some(100), None);
    l.max_states = Some(3);
    let m = meter(&a.id, &l, NOW);
    let month = BillingMonth::from_unix(NOW);
    ok(
        s,
        update(
            s,
            &m,
            &info.id,
            &[Experience::new(1, 0, 1.0, 2), Experience::new(2, 1, 1.0, 1)],
        ),
    );
    let before = ok(s, s.q_table(&a.id, &info.id, 0, 10));
    check_eq!(s, before.total, 2);
    // Two new states (3 and 4) would make 4 > 3: refused whole.
    let two_new = [
        Experience::new(1, 0, 5.0, 2),
        Experience::new(3, 0, 1.0, 4),
        Experience::new(4, 1, 1.0, 3),
    ];
    match update(s, &m, &info.id, &two_new) {
        Err(Error::StateLimitReached { limit, states, new }) => {
            check_eq!(s, (limit, states, new), (3, 2, 2));
        }
        other => panic!(
            "[{}] expected StateLimitReached, got {other:?}",
            s.backend()
        ),
    }
    check_eq!(
        s,
        ok(s, s.usage(&a.id, month)).calls,
        2,
        "the refused call cost nothing"
    );
    let after = ok(s, s.q_table(&a.id, &info.id, 0, 10));
    check_eq!(s, after.total, 2);
    check_eq!(s, after.rows, before.rows, "nothing applied");
    // One new state, named twice, fits exactly.
    let one_new = [
        Experience::new(1, 0, 1.0, 3),
        Experience::new(3, 1, 1.0, 9),
        Experience::new(3, 0, 1.0, 1),
    ];
    ok(s, update(s, &m, &info.id, &one_new));
    check_eq!(s, ok(s, s.q_table(&a.id, &info.id, 0, 10)).total, 3);
    let r = update(s, &m, &info.id, &[Experience::new(9, 0, 1.0, 1)]);
    check!(
        s,
        matches!(r, Err(Error::StateLimitReached { .. })),
        "{r:?}"
    );
    // At the limit, stored states still learn (the next state is only read).
    ok(
        s,
        update(s, &m, &info.id, &[Experience::new(2, 0, 1.0, 77)]),
    );
    check_eq!(s, ok(s, s.usage(&a.id, month)).calls, 6);
    check_eq!(s, ok(s, s.model(&a.id, &info.id)).stats.updates, 6);
}

/// Quotas: exact limit, refused calls not counted, batches all or nothing,
/// a new month starts at zero, unlimited never refuses.
pub fn quota<S: Store>(s: &S) {
    let a = new_user(s, "a@example.com");
    let info = ok(s, s.create_model(&a.id, "m", &seeded(2, 3), None, NOW));
    let l = limits(Some(5), None);
    let m = meter(&a.id, &l, NOW);
    let three = [Experience::new(1, 0, 1.0, 2); 3];
    ok(s, update(s, &m, &info.id, &three));
    match update(s, &m, &info.id, &three) {
        Err(Error::QuotaExceeded {
            limit,
            retry_after_secs,
        }) => {
            check_eq!(s, limit, 5);
            let next = BillingMonth::from_unix(NOW).next().start_unix();
            check_eq!(s, retry_after_secs as i64, next - NOW);
        }
        other => panic!("[{}] expected QuotaExceeded, got {other:?}", s.backend()),
    }
    ok(s, s.predict(&m, &info.id, StateRef::Int(1), true, None));
    ok(s, update(s, &m, &info.id, &three[..1]));
    let r = s.predict(&m, &info.id, StateRef::Int(1), true, None);
    check!(s, matches!(r, Err(Error::QuotaExceeded { .. })), "{r:?}");
    let month = BillingMonth::from_unix(NOW);
    check_eq!(s, ok(s, s.usage(&a.id, month)).calls, 5);
    let st = ok(s, s.model(&a.id, &info.id)).stats;
    check_eq!(s, st.updates, 4, "refused calls did not touch the model");
    check_eq!(s, st.predictions, 1);
    // Next month: a fresh quota.
    let next = month.next().start_unix() + 10;
    let m2 = meter(&a.id, &l, next);
    ok(s, s.predict(&m2, &info.id, StateRef::Int(1), true, None));
    check_eq!(s, ok(s, s.usage(&a.id, month.next())).calls, 1);
    check_eq!(s, ok(s, s.usage(&a.id, month)).calls, 5);
    // Unlimited.
    let unl = limits(None, None);
    let m3 = meter(&a.id, &unl, NOW);
    for _ in 0..3 {
        ok(s, update(s, &m3, &info.id, &three));
    }
    check_eq!(s, ok(s, s.usage(&a.id, month)).calls, 14);
    // Another user's usage is separate.
    let b = new_user(s, "b@example.com");
    check_eq!(s, ok(s, s.usage(&b.id, month)).calls, 0);
}

/// Tenant isolation: every model route answers NotFound for another owner,
/// exactly as for an unknown id, and nothing is changed or metered.
pub fn tenant_isolation<S: Store>(s: &S) {
    let a = new_user(s, "a@example.com");
    let b = new_user(s, "b@example.com");
    let mut m = seeded(2, 9);
    m.update(&Experience::new(1, 1, 3.0, 2)).unwrap();
    let info = ok(s, s.create_model(&a.id, "private", &m, None, NOW));
    let key = ok(
        s,
        s.create_api_key(&a.id, full_key("k", "qk", "hash-a"), NOW),
    );
    let l = limits(None, None);
    let mb = meter(&b.id, &l, NOW);
    for id in [info.id.as_str(), "unknown-id"] {
        let results: Vec<(&str, Result<()>)> = vec![
            ("model", s.model(&b.id, id).map(|_| ())),
            ("export", s.export_model(&b.id, id).map(|_| ())),
            ("q_table", s.q_table(&b.id, id, 0, 10).map(|_| ())),
            (
                "update_model",
                s.update_model(
                    &b.id,
                    id,
                    ModelPatch {
                        name: Some("pwned".into()),
                        config: None,
                        decisions: None,
                        on_reshape: None,
                    },
                    NOW,
                )
                .map(|_| ()),
            ),
            (
                "predict",
                s.predict(&mb, id, StateRef::Int(1), false, None)
                    .map(|_| ()),
            ),
            (
                "update",
                update(s, &mb, id, &[Experience::new(1, 0, -100.0, 2)]).map(|_| ()),
            ),
            ("delete", s.delete_model(&b.id, id)),
        ];
        for (what, r) in results {
            check!(
                s,
                matches!(r, Err(Error::NotFound("model"))),
                "{what} on {id} by another user: {r:?}"
            );
        }
    }
    check_eq!(s, ok(s, s.models(&b.id)), vec![]);
    let r = s.delete_api_key(&b.id, &key.id);
    check!(s, matches!(r, Err(Error::NotFound(_))), "{r:?}");
    check_eq!(s, ok(s, s.api_keys(&b.id)), vec![]);
    // A's model is as it was, and the owner still reaches it.
    let now = ok(s, s.model(&a.id, &info.id));
    check_eq!(s, now, info);
    check_eq!(
        s,
        ok(s, s.export_model(&a.id, &info.id)).to_bytes().unwrap(),
        m.to_bytes().unwrap()
    );
    let month = BillingMonth::from_unix(NOW);
    check_eq!(s, ok(s, s.usage(&b.id, month)).calls, 0);
    check_eq!(s, ok(s, s.usage(&a.id, month)).calls, 0);
    check_eq!(s, ok(s, s.api_keys(&a.id)).len(), 1);
}

/// 16 threads x 1,000 updates of one state of one model: exactly 16,000
/// updates, and the Q-value and counters of the serial run.
pub fn concurrent_updates<S: Store>(s: &S) {
    const THREADS: usize = 16;
    const EACH: usize = 1_000;
    let a = new_user(s, "a@example.com");
    let mut cfg = ModelConfig::new(2);
    cfg.learning_rate = 1.0;
    cfg.seed = Some(5);
    let model = Model::new(cfg).unwrap();
    let info = ok(s, s.create_model(&a.id, "hot", &model, None, NOW));
    let l = limits(None, None);
    let exp = Experience::new("s", 1, 2.5, "s").done(true);
    let barrier = Barrier::new(THREADS);
    std::thread::scope(|sc| {
        for _ in 0..THREADS {
            sc.spawn(|| {
                let m = meter(&a.id, &l, NOW);
                barrier.wait();
                for _ in 0..EACH {
                    let out = ok(s, update(s, &m, &info.id, &[exp]));
                    check_eq!(s, out[0].q_value, 2.5);
                }
            });
        }
    });
    let mut serial = model.clone();
    for _ in 0..THREADS * EACH {
        serial.update(&exp).unwrap();
    }
    let got = ok(s, s.model(&a.id, &info.id));
    check_eq!(
        s,
        got.stats.updates,
        (THREADS * EACH) as u64,
        "no update lost"
    );
    check_eq!(s, got.stats, serial.stats(), "the serial run's statistics");
    let q = ok(s, s.export_model(&a.id, &info.id));
    check_eq!(
        s,
        q.q_values("s").unwrap(),
        serial.q_values("s").unwrap(),
        "the serial run's Q-values"
    );
    let month = BillingMonth::from_unix(NOW);
    check_eq!(
        s,
        ok(s, s.usage(&a.id, month)).calls,
        (THREADS * EACH) as u64
    );
}

/// 8 threads x 200 calls spread over 20 models (SQLite runs it with a
/// cache budget so small that models are evicted every few calls): every
/// model ends as a serial replay of its calls. Each thread teaches each
/// model its own state with a learning rate of 1/2, so a lost, repeated or
/// reordered update changes that state's Q-values; the statistics count
/// every update and prediction.
pub fn eviction_under_concurrent_updates<S: Store>(s: &S) {
    const THREADS: usize = 8;
    const EACH: usize = 200;
    const MODELS: usize = 20;
    let a = new_user(s, "a@example.com");
    let mut cfg = ModelConfig::new(2);
    cfg.learning_rate = 0.5;
    cfg.epsilon_decay = 0.99;
    cfg.seed = Some(9);
    let model = Model::new(cfg).unwrap();
    let ids: Vec<String> = (0..MODELS)
        .map(|i| {
            ok(
                s,
                s.create_model(&a.id, &format!("m{i}"), &model, None, NOW),
            )
            .id
        })
        .collect();
    let l = limits(None, None);
    let states: Vec<String> = (0..THREADS).map(|t| format!("t{t}")).collect();
    // Thread t's i-th call: which model, the experience, and whether a
    // prediction comes first. Rewards are small integers: sums are exact
    // in any order.
    let call = |t: usize, i: usize| {
        let st = states[t].as_str();
        let reward = ((t * 31 + i * 7) % 11) as f64 - 5.0;
        let exp = Experience::new(st, (t + i / MODELS) % 2, reward, st).done(true);
        ((i + 3 * t) % MODELS, exp, i.is_multiple_of(10))
    };
    let barrier = Barrier::new(THREADS);
    std::thread::scope(|sc| {
        for t in 0..THREADS {
            let (ids, l, a, barrier) = (&ids, &l, &a, &barrier);
            sc.spawn(move || {
                let m = meter(&a.id, l, NOW);
                barrier.wait();
                for i in 0..EACH {
                    let (k, exp, predict) = call(t, i);
                    if predict {
                        ok(s, s.predict(&m, &ids[k], exp.state, false, None));
                    }
                    ok(s, update(s, &m, &ids[k], &[exp]));
                }
            });
        }
    });
    let mut serial = vec![model; MODELS];
    let mut calls = 0;
    for t in 0..THREADS {
        for i in 0..EACH {
            let (k, exp, predict) = call(t, i);
            if predict {
                serial[k].predict(exp.state, false, None).unwrap();
                calls += 1;
            }
            serial[k].update(&exp).unwrap();
            calls += 1;
        }
    }
    for (k, id) in ids.iter().enumerate() {
        let (got, want) = (ok(s, s.model(&a.id, id)).stats, serial[k].stats());
        check_eq!(s, got.updates, want.updates, "model {k}: no update lost");
        check_eq!(
            s,
            got.predictions,
            want.predictions,
            "model {k}: predictions"
        );
        check_eq!(s, got.episodes, want.episodes, "model {k}: episodes");
        check_eq!(s, got.states, want.states, "model {k}: states");
        check_eq!(s, got.epsilon, want.epsilon, "model {k}: epsilon");
        check_eq!(
            s,
            got.mean_reward,
            want.mean_reward,
            "model {k}: mean reward"
        );
        let q = ok(s, s.export_model(&a.id, id));
        for st in &states {
            check_eq!(
                s,
                q.q_values(st.as_str()).unwrap(),
                serial[k].q_values(st.as_str()).unwrap(),
                "model {k}, state {st}: the serial replay's Q-values"
            );
        }
    }
    let month = BillingMonth::from_unix(NOW);
    check_eq!(s, ok(s, s.usage(&a.id, month)).calls, calls);
}

/// 16 threads race for the last 10 calls of a quota: exactly 10 granted.
pub fn concurrent_quota<S: Store>(s: &S) {
    const THREADS: usize = 16;
    let a = new_user(s, "a@example.com");
    let info = ok(s, s.create_model(&a.id, "m", &seeded(2, 11), None, NOW));
    let l = limits(Some(100), None);
    let m = meter(&a.id, &l, NOW);
    let ninety = vec![Experience::new(1, 0, 1.0, 2); 90];
    ok(s, update(s, &m, &info.id, &ninety));
    let granted = AtomicUsize::new(0);
    let barrier = Barrier::new(THREADS);
    std::thread::scope(|sc| {
        for t in 0..THREADS {
            let (granted, barrier, info, m) = (&granted, &barrier, &info, &m);
            sc.spawn(move || {
                barrier.wait();
                for i in 0..5 {
                    let r = if (t + i) % 2 == 0 {
                        s.predict(m, &info.id, StateRef::Int(1), true, None)
                            .map(|_| ())
                    } else {
                        update(s, m, &info.id, &[Experience::new(1, 1, 1.0, 2)]).map(|_| ())
                    };
                    match r {
                        Ok(()) => {
                            granted.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(Error::QuotaExceeded { .. }) => {}
                        Err(e) => panic!("[{}] unexpected error: {e:?}", s.backend()),
                    }
                }
            });
        }
    });
    check_eq!(s, granted.load(Ordering::SeqCst), 10, "exactly the last 10");
    let month = BillingMonth::from_unix(NOW);
    check_eq!(s, ok(s, s.usage(&a.id, month)).calls, 100);
    let st = ok(s, s.model(&a.id, &info.id)).stats;
    check_eq!(
        s,
        st.updates + st.predictions,
        100,
        "only granted calls applied"
    );
}

/// 16 threads mix valid updates with invalid ones (an action out of range,
/// an unknown model, another user's model) on one user's quota: batched or
/// not, only the valid calls are applied and counted, and a quota that
/// fits exactly the valid calls grants every one of them.
pub fn concurrent_invalid_calls<S: Store>(s: &S) {
    const THREADS: usize = 16;
    const EACH: usize = 40;
    let a = new_user(s, "a@example.com");
    let b = new_user(s, "b@example.com");
    let info = ok(s, s.create_model(&a.id, "m", &seeded(2, 3), None, NOW));
    let other = ok(s, s.create_model(&b.id, "theirs", &seeded(2, 4), None, NOW));
    let before = ok(s, s.model(&a.id, &info.id)).stats.updates;
    // Exactly the valid calls fit.
    let valid = (THREADS * EACH / 2) as u64;
    let l = limits(Some(valid), None);
    let barrier = Barrier::new(THREADS);
    std::thread::scope(|sc| {
        for t in 0..THREADS {
            let (barrier, info, other, a, l) = (&barrier, &info, &other, &a, &l);
            sc.spawn(move || {
                let m = meter(&a.id, l, NOW);
                barrier.wait();
                for i in 0..EACH {
                    let good = Experience::new(1, 1, 1.0, 2);
                    let r = match (t + i) % 6 {
                        0 | 2 | 4 => update(s, &m, &info.id, &[good]),
                        1 => update(s, &m, &info.id, &[Experience::new(1, 7, 1.0, 2)]),
                        3 => update(s, &m, "no-such-model", &[good]),
                        _ => update(s, &m, &other.id, &[good]),
                    };
                    match ((t + i) % 2, r) {
                        (0, Ok(_)) => {}
                        (
                            1,
                            Err(
                                Error::InvalidAction { .. }
                                | Error::InvalidField { .. }
                                | Error::NotFound(_),
                            ),
                        ) => {}
                        (_, r) => panic!("[{}] call {t}/{i}: unexpected {r:?}", s.backend()),
                    }
                }
            });
        }
    });
    let month = BillingMonth::from_unix(NOW);
    check_eq!(
        s,
        ok(s, s.usage(&a.id, month)).calls,
        valid,
        "only valid calls counted"
    );
    check_eq!(
        s,
        ok(s, s.usage(&b.id, month)).calls,
        0,
        "nothing counted for b"
    );
    check_eq!(
        s,
        ok(s, s.model(&a.id, &info.id)).stats.updates - before,
        valid,
        "only valid calls applied"
    );
    check_eq!(s, ok(s, s.model(&b.id, &other.id)).stats.updates, 0);
}

/// 16 threads create models under a limit of 3: exactly 3 exist.
pub fn concurrent_model_limit<S: Store>(s: &S) {
    const THREADS: usize = 16;
    let a = new_user(s, "a@example.com");
    let created = AtomicUsize::new(0);
    let barrier = Barrier::new(THREADS);
    let model = seeded(2, 1);
    std::thread::scope(|sc| {
        for t in 0..THREADS {
            let (created, barrier, model, a) = (&created, &barrier, &model, &a);
            sc.spawn(move || {
                barrier.wait();
                match s.create_model(&a.id, &format!("m{t}"), model, Some(3), NOW) {
                    Ok(_) => {
                        created.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(Error::ModelLimitReached { limit }) => check_eq!(s, limit, 3),
                    Err(e) => panic!("[{}] unexpected error: {e:?}", s.backend()),
                }
            });
        }
    });
    check_eq!(s, created.load(Ordering::SeqCst), 3);
    check_eq!(s, ok(s, s.models(&a.id)).len(), 3);
    // Deleting one frees a place.
    let first = ok(s, s.models(&a.id)).remove(0);
    ok(s, s.delete_model(&a.id, &first.id));
    ok(s, s.create_model(&a.id, "again", &model, Some(3), NOW));
    let r = s.create_model(&a.id, "over", &model, Some(3), NOW);
    check!(
        s,
        matches!(r, Err(Error::ModelLimitReached { limit: 3 })),
        "{r:?}"
    );
}

/// What [`write_everything`] wrote, to check after a reopen.
pub struct Written {
    pub user: User,
    pub model_id: String,
    pub model: Model,
    pub other_model_id: String,
    pub key_hash: &'static str,
}

/// Writes one of everything, with learning that moved epsilon, the
/// counters and the random generator.
pub fn write_everything<S: Store>(s: &S) -> Written {
    let a = new_user(s, "persist@example.com");
    ok(s, s.set_tier(&a.id, Tier::Pro));
    ok(s, s.set_setting_if_absent("jwt_secret", "s3cret-value"));
    ok(
        s,
        s.create_api_key(&a.id, full_key("k", "qk_p", "hash-persist"), NOW),
    );
    let mut local = seeded(3, 77);
    let info = ok(s, s.create_model(&a.id, "kept", &local, None, NOW));
    let other = ok(
        s,
        s.create_model(&a.id, "deleted", &seeded(2, 2), None, NOW),
    );
    // Past 150 calls as overage (kept per kind and overage on reopen).
    let l = TierLimits {
        overage: true,
        ..limits(Some(150), None)
    };
    let m = meter(&a.id, &l, NOW);
    for i in 0..200i64 {
        let st = StateRef::Int(i % 13);
        let p = ok(s, s.predict(&m, &info.id, st, true, None));
        local.predict_full(st, true, None).unwrap();
        let exp = Experience::new(st, p.action, (i % 5) as f64, StateRef::Int((i + 1) % 13))
            .done(i % 10 == 9);
        ok(s, update(s, &m, &info.id, &[exp]));
        local.update(&exp).unwrap();
    }
    ok(
        s,
        s.update_model(
            &a.id,
            &info.id,
            ModelPatch {
                name: Some("kept-renamed".into()),
                config: None,
                decisions: None,
                on_reshape: None,
            },
            NOW + 1,
        ),
    );
    ok(s, s.delete_model(&a.id, &other.id));
    let user = ok(s, s.user(&a.id)).unwrap();
    Written {
        user,
        model_id: info.id,
        model: local,
        other_model_id: other.id,
        key_hash: "hash-persist",
    }
}

/// Checks, on a reopened store, everything [`write_everything`] wrote: a
/// reloaded model behaves exactly as the original would have.
pub fn check_everything<S: Store>(s: &S, w: &Written) {
    let a = &w.user;
    check_eq!(s, ok(s, s.user(&a.id)).as_ref(), Some(a));
    check_eq!(s, ok(s, s.user_by_email(&a.email)).as_ref(), Some(a));
    check_eq!(
        s,
        ok(s, s.setting("jwt_secret")),
        Some("s3cret-value".to_string())
    );
    check!(
        s,
        ok(s, s.user_by_api_key(w.key_hash, NOW)).is_some(),
        "API key kept"
    );
    let info = ok(s, s.model(&a.id, &w.model_id));
    check_eq!(s, info.name, "kept-renamed");
    check_eq!(s, info.stats, w.model.stats());
    let r = s.model(&a.id, &w.other_model_id);
    check!(
        s,
        matches!(r, Err(Error::NotFound(_))),
        "stays deleted: {r:?}"
    );
    let e = ok(s, s.export_model(&a.id, &w.model_id));
    check_eq!(
        s,
        e.to_bytes().unwrap(),
        w.model.to_bytes().unwrap(),
        "epsilon, counters, rng state and Q-table all kept"
    );
    let counters: &Counters = e.learner().counters();
    check_eq!(s, counters, w.model.learner().counters());
    // It continues exactly as the original would have.
    let mut local = w.model.clone();
    let l = limits(Some(10_000), None);
    let m = meter(&a.id, &l, NOW + 2);
    for i in 0..20i64 {
        let p = ok(s, s.predict(&m, &w.model_id, StateRef::Int(i), true, None));
        check_eq!(
            s,
            p,
            local.predict_full(StateRef::Int(i), true, None).unwrap()
        );
    }
    let month = BillingMonth::from_unix(NOW);
    let u = ok(s, s.usage(&a.id, month));
    check_eq!(s, u.calls, 400 + 20);
    check_eq!(s, u.of_kind(CallKind::Predict), 200 + 20);
    check_eq!(s, u.of_kind(CallKind::Update), 200);
    check_eq!(s, u.overage, 400 - 150, "overage kept");
    let page = ok(s, s.q_table(&a.id, &w.model_id, 0, 1000));
    check_eq!(s, page.rows.len(), 13);
    let keys: Vec<StateKey> = page.rows.into_iter().map(|(k, _)| k).collect();
    let stored: Vec<StateKey> = w
        .model
        .table()
        .keys()
        .map(StateKey::from_canonical)
        .collect();
    check_eq!(s, keys, stored);
}

/// Reopen persistence: write, drop the store, reopen, read back everything.
pub fn reopen_persistence<S: Store>(open: impl Fn() -> S) {
    let s = open();
    let w = write_everything(&s);
    ok(&s, s.flush());
    drop(s);
    let s = open();
    check_everything(&s, &w);
    // And without a clean flush: acknowledged is enough.
    let l = limits(None, None);
    let m = meter(&w.user.id, &l, NOW);
    let before = ok(&s, s.model(&w.user.id, &w.model_id)).stats.updates;
    ok(
        &s,
        update(&s, &m, &w.model_id, &[Experience::new(99, 0, 1.0, 98)]),
    );
    drop(s);
    let s = open();
    let after = ok(&s, s.model(&w.user.id, &w.model_id)).stats.updates;
    check_eq!(s, after, before + 1);
}
