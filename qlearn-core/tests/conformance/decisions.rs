//! Conformance checks of decisions and delayed rewards (issue 14), listed
//! in `conformance_tests!` with the rest of the suite.

use qlearn_core::decisions::{
    Aggregation, Decide, DecisionStatus, DecisionsConfig, EpisodeEnd, RewardStatus,
};
use qlearn_core::store::{DecisionQuery, Meter, ModelPatch, RewardIn, Store};
use qlearn_core::tenancy::BillingMonth;
use qlearn_core::{Error, Experience, Model, StateRef};

use super::{limits, new_user, ok, seeded, NOW};

/// A decisions setting: a `wait`-second window, `default` reward, `sum`.
pub(crate) fn setting(wait: u64, default: Option<f64>) -> DecisionsConfig {
    DecisionsConfig {
        reward_wait_seconds: wait,
        default_reward: default,
        aggregation: Aggregation::Sum,
        retention_days: 30,
    }
}

/// Creates `model` for `owner` with decisions on; returns its id.
pub(crate) fn logging_model<S: Store>(
    s: &S,
    owner: &str,
    model: &Model,
    c: DecisionsConfig,
) -> String {
    let info = ok(s, s.create_model(owner, "d", model, None, NOW));
    let patched = ok(
        s,
        s.update_model(
            owner,
            &info.id,
            ModelPatch {
                decisions: Some(Some(c.clone())),
                ..ModelPatch::default()
            },
            NOW,
        ),
    );
    assert_eq!(
        patched.decisions,
        Some(c.clone()),
        "[{}] setting",
        s.backend()
    );
    let read = ok(s, s.model(owner, &info.id));
    assert_eq!(
        read.decisions,
        Some(c),
        "[{}] setting read back",
        s.backend()
    );
    info.id
}

pub(crate) fn reward(id: &str, value: f64, reward_id: Option<&str>, is_final: bool) -> RewardIn {
    RewardIn {
        decision_id: id.to_owned(),
        value,
        reward_id: reward_id.map(str::to_owned),
        is_final,
    }
}

/// The first ten decisions of `owner`'s model `id`, and the log's counts.
pub(crate) fn log_page<S: Store>(s: &S, owner: &str, id: &str) -> qlearn_core::store::DecisionPage {
    let q = DecisionQuery {
        limit: 10,
        ..Default::default()
    };
    ok(s, s.decisions(owner, id, &q))
}

/// Whether `r` is NotFound.
fn nf<T>(r: &Result<T, Error>) -> bool {
    matches!(r, Err(Error::NotFound(_)))
}

fn calls<S: Store>(s: &S, user: &str) -> u64 {
    ok(s, s.usage(user, BillingMonth::from_unix(NOW))).calls
}

/// An experience with SARSA's next action (what a transition carries).
fn exp<'a>(
    st: StateRef<'a>,
    a: usize,
    r: f64,
    next: Option<(StateRef<'a>, usize)>,
) -> Experience<'a> {
    match next {
        Some((n, na)) => Experience::new(st, a, r, n).next_action(na),
        None => Experience::new(st, a, r, st).done(true),
    }
}

/// A logging predict, rewards arriving out of order and an episode end
/// teach the same Q-table as posting the equivalent transitions to
/// `update`, each once; a decision without an episode is a one-step
/// episode.
pub fn decisions_learn_like_updates<S: Store>(s: &S) {
    let a = new_user(s, "a@example.com");
    let mut local = seeded(4, 7);
    let id = logging_model(s, &a.id, &local, setting(3600, None));
    let l = limits(Some(1_000), None);
    let m = Meter {
        user_id: &a.id,
        limits: &l,
        now: NOW,
    };
    let (s0, s1, s2, s9) = (
        StateRef::Int(1),
        StateRef::Int(2),
        StateRef::Str("x"),
        StateRef::Int(9),
    );
    let decide = |st: StateRef<'_>, ep: Option<&str>| {
        let mut d = Decide::new(st);
        d.episode_id = ep;
        ok(s, s.decide(&m, &id, &d))
    };
    let d0 = decide(s0, Some("e1"));
    let p0 = local.predict_full(s0, true, None).unwrap();
    assert_eq!(d0.prediction, p0, "[{}] prediction 0", s.backend());
    let d0 = d0.decision.expect("logged");
    assert_eq!(d0.probability, p0.probability);
    assert_eq!(d0.step, 0);
    let d1 = decide(s1, Some("e1"));
    let p1 = local.predict_full(s1, true, None).unwrap();
    assert_eq!(d1.prediction, p1, "[{}] prediction 1", s.backend());
    let d1 = d1.decision.expect("logged");
    assert_eq!(d1.step, 1);

    // Step 0's final reward after step 1 exists: learned at once.
    let r = ok(
        s,
        s.reward(&m, &id, reward(&d0.decision_id, 1.0, None, true)),
    );
    assert_eq!(r.status, RewardStatus::Applied, "[{}]", s.backend());
    local
        .update(&exp(s0, p0.action, 1.0, Some((s1, p1.action))))
        .unwrap();
    // Step 1: two rewards summed; it waits for step 2.
    let r = ok(
        s,
        s.reward(&m, &id, reward(&d1.decision_id, 0.5, None, false)),
    );
    assert_eq!(r.status, RewardStatus::Open, "[{}]", s.backend());
    let r = ok(
        s,
        s.reward(&m, &id, reward(&d1.decision_id, 0.25, None, true)),
    );
    assert_eq!(
        (r.status, r.reward, r.rewards),
        (RewardStatus::Closed, Some(0.75), 2),
        "[{}]",
        s.backend()
    );
    let d2 = decide(s2, Some("e1"));
    let p2 = local.predict_full(s2, true, None).unwrap();
    assert_eq!(d2.prediction, p2, "[{}] prediction 2", s.backend());
    let d2 = d2.decision.expect("logged");
    local
        .update(&exp(s1, p1.action, 0.75, Some((s2, p2.action))))
        .unwrap();
    let r = ok(
        s,
        s.reward(&m, &id, reward(&d2.decision_id, -1.0, None, true)),
    );
    assert_eq!(r.status, RewardStatus::Closed, "[{}]", s.backend());
    let n = ok(s, s.end_episode(&m, &id, "e1", &EpisodeEnd::terminated()));
    assert_eq!(n, 1, "[{}] the last step learned at the end", s.backend());
    local.update(&exp(s2, p2.action, -1.0, None)).unwrap();
    // Ending it again the same way changes nothing.
    assert_eq!(
        ok(s, s.end_episode(&m, &id, "e1", &EpisodeEnd::terminated())),
        0
    );

    let d9 = decide(s9, None).decision.expect("logged");
    local.predict_full(s9, true, None).unwrap();
    ok(
        s,
        s.reward(&m, &id, reward(&d9.decision_id, 2.0, None, true)),
    );
    local.update(&exp(s9, d9.action, 2.0, None)).unwrap();

    let table = ok(s, s.q_table(&a.id, &id, 0, 100));
    assert_eq!(table.rows, local.rows(0, 100), "[{}] Q-table", s.backend());
    let info = ok(s, s.model(&a.id, &id));
    assert_eq!(
        info.stats.updates,
        4,
        "[{}] each transition once",
        s.backend()
    );
    assert_eq!(info.stats, local.stats(), "[{}] statistics", s.backend());
    let page = log_page(s, &a.id, &id);
    assert_eq!(page.total, Some(4));
    assert!(page
        .decisions
        .iter()
        .all(|d| d.status == DecisionStatus::Applied));
    assert_eq!(
        (page.stats.decisions, page.stats.rewards, page.stats.pending),
        (4, 5, 0)
    );
    // Nothing is left to settle.
    assert_eq!(ok(s, s.settle(NOW + 10 * 86_400)), 0, "[{}]", s.backend());
}

/// A client `decision_id` and a `reward_id` are idempotency keys: a retry
/// is answered from the log and metered once; a conflicting one is 409.
pub fn decision_idempotency<S: Store>(s: &S) {
    let a = new_user(s, "a@example.com");
    let id = logging_model(s, &a.id, &seeded(3, 1), setting(600, None));
    let l = limits(Some(1_000), None);
    let m = Meter {
        user_id: &a.id,
        limits: &l,
        now: NOW,
    };
    let first = ok(
        s,
        s.decide(&m, &id, &Decide::new(StateRef::Int(5)).id("c-1")),
    );
    let again = ok(
        s,
        s.decide(&m, &id, &Decide::new(StateRef::Int(5)).id("c-1")),
    );
    let (first, again) = (
        first.decision.expect("logged"),
        again.decision.expect("logged"),
    );
    assert!(
        !first.replayed && again.replayed,
        "[{}] replay flagged",
        s.backend()
    );
    assert_eq!(
        (first.decision_id.as_str(), first.action, first.probability),
        ("c-1", again.action, again.probability)
    );
    let other = s.decide(&m, &id, &Decide::new(StateRef::Int(6)).id("c-1"));
    assert!(
        matches!(other, Err(Error::Conflict(_))),
        "[{}] same id, other state: {other:?}",
        s.backend()
    );
    assert_eq!(
        calls(s, &a.id),
        1,
        "[{}] a retried decision is metered once",
        s.backend()
    );

    let r = ok(s, s.reward(&m, &id, reward("c-1", 1.0, Some("r-1"), false)));
    assert_eq!(r.status, RewardStatus::Open);
    let dup = ok(s, s.reward(&m, &id, reward("c-1", 1.0, Some("r-1"), false)));
    assert_eq!(
        (dup.status, dup.reward, dup.rewards),
        (RewardStatus::Duplicate, Some(1.0), 1),
        "[{}] a repeated reward_id has no effect",
        s.backend()
    );
    let clash = s.reward(&m, &id, reward("c-1", 2.0, Some("r-1"), false));
    assert!(
        matches!(clash, Err(Error::Conflict(_))),
        "[{}] same reward_id, other value: {clash:?}",
        s.backend()
    );
    assert_eq!(calls(s, &a.id), 2, "[{}] duplicates are free", s.backend());
    let unknown = s.reward(&m, &id, reward("nope", 1.0, None, false));
    assert!(
        matches!(unknown, Err(Error::NotFound(_))),
        "[{}] {unknown:?}",
        s.backend()
    );
}

/// With a controlled clock: a window closes at its deadline with the
/// default reward (learned as the equivalent update), not before; a later
/// reward is late, free and not learned; `null` default teaches nothing.
pub fn decision_deadline<S: Store>(s: &S) {
    let a = new_user(s, "a@example.com");
    let mut local = seeded(3, 9);
    let id = logging_model(s, &a.id, &local, setting(60, Some(-1.0)));
    let quiet = logging_model(s, &a.id, &seeded(3, 9), setting(60, None));
    let l = limits(Some(1_000), None);
    let at = |now| Meter {
        user_id: &a.id,
        limits: &l,
        now,
    };
    let st = StateRef::Str("home");
    let d = ok(s, s.decide(&at(NOW), &id, &Decide::new(st)))
        .decision
        .expect("logged");
    let p = local.predict_full(st, true, None).unwrap();
    assert_eq!(d.action, p.action);
    ok(s, s.decide(&at(NOW), &quiet, &Decide::new(st)));
    assert_eq!(
        ok(s, s.settle(NOW + 59)),
        0,
        "[{}] the window is open",
        s.backend()
    );
    assert_eq!(ok(s, s.model(&a.id, &id)).stats.updates, 0);
    assert_eq!(
        ok(s, s.settle(NOW + 60)),
        1,
        "[{}] closed at the deadline",
        s.backend()
    );
    assert_eq!(
        ok(s, s.settle(NOW + 61)),
        0,
        "[{}] settled once",
        s.backend()
    );
    local.update(&exp(st, p.action, -1.0, None)).unwrap();
    let table = ok(s, s.q_table(&a.id, &id, 0, 10));
    assert_eq!(
        table.rows,
        local.rows(0, 10),
        "[{}] default reward learned",
        s.backend()
    );
    assert_eq!(
        ok(s, s.model(&a.id, &quiet)).stats.updates,
        0,
        "[{}] null default",
        s.backend()
    );
    let page = ok(
        s,
        s.decisions(
            &a.id,
            &quiet,
            &DecisionQuery {
                status: Some(DecisionStatus::Expired),
                limit: 10,
                ..Default::default()
            },
        ),
    );
    assert_eq!(
        (page.total, page.stats.defaulted),
        (Some(1), 1),
        "[{}] expired",
        s.backend()
    );

    let before = calls(s, &a.id);
    let late = ok(
        s,
        s.reward(&at(NOW + 120), &id, reward(&d.decision_id, 5.0, None, true)),
    );
    assert_eq!(late.status, RewardStatus::Late, "[{}]", s.backend());
    assert_eq!(
        calls(s, &a.id),
        before,
        "[{}] late rewards are free",
        s.backend()
    );
    assert_eq!(ok(s, s.q_table(&a.id, &id, 0, 10)).rows, local.rows(0, 10));
}

/// Metering: a logging predict 1, each accepted reward 1; a batch of
/// rewards over the quota is refused whole and records nothing; duplicates,
/// episode ends and settlements are free.
pub fn decision_metering<S: Store>(s: &S) {
    let a = new_user(s, "a@example.com");
    let id = logging_model(s, &a.id, &seeded(2, 3), setting(60, Some(0.0)));
    let l = limits(Some(3), None);
    let m = Meter {
        user_id: &a.id,
        limits: &l,
        now: NOW,
    };
    let x = ok(
        s,
        s.decide(&m, &id, &Decide::new(StateRef::Int(1)).id("x").episode("e")),
    );
    let y = ok(
        s,
        s.decide(&m, &id, &Decide::new(StateRef::Int(2)).id("y").episode("e")),
    );
    assert!(x.decision.is_some() && y.decision.is_some());
    assert_eq!(calls(s, &a.id), 2);
    let both = [
        reward("x", 1.0, Some("1"), false),
        reward("y", 1.0, Some("2"), false),
    ];
    let over = s.rewards(&m, &id, &both);
    assert!(
        matches!(over, Err(Error::QuotaExceeded { .. })),
        "[{}] two rewards, one call left: {over:?}",
        s.backend()
    );
    let page = log_page(s, &a.id, &id);
    assert_eq!(
        page.stats.rewards,
        0,
        "[{}] a refused batch records nothing",
        s.backend()
    );
    let out = ok(s, s.rewards(&m, &id, &both[..1]));
    assert_eq!(out.len(), 1);
    assert_eq!(calls(s, &a.id), 3);
    // At the quota: a duplicate, an end and a settlement still work, free.
    let dup = ok(s, s.rewards(&m, &id, &both[..1]));
    assert!(matches!(dup.as_slice(), [Ok(r)] if r.status == RewardStatus::Duplicate));
    ok(s, s.end_episode(&m, &id, "e", &EpisodeEnd::terminated()));
    assert_eq!(
        ok(s, s.settle(NOW + 60)),
        2,
        "[{}] both steps settled",
        s.backend()
    );
    assert_eq!(calls(s, &a.id), 3, "[{}] free calls", s.backend());
    let more = s.decide(&m, &id, &Decide::new(StateRef::Int(3)));
    assert!(
        matches!(more, Err(Error::QuotaExceeded { .. })),
        "[{}] {more:?}",
        s.backend()
    );
}

/// The tier's states per model: a logging predict in a new state past the
/// limit is refused (free, nothing logged); stored states go on.
pub fn decision_state_limit<S: Store>(s: &S) {
    let a = new_user(s, "a@example.com");
    let id = logging_model(s, &a.id, &seeded(2, 8), setting(600, None));
    let mut l = limits(Some(100), None);
    l.max_states = Some(1);
    let m = Meter {
        user_id: &a.id,
        limits: &l,
        now: NOW,
    };
    let d = ok(s, s.decide(&m, &id, &Decide::new(StateRef::Int(1)))).decision;
    let d = d.expect("logged");
    ok(
        s,
        s.reward(&m, &id, reward(&d.decision_id, 1.0, None, true)),
    );
    assert_eq!(ok(s, s.q_table(&a.id, &id, 0, 10)).total, 1);
    let refused = s.decide(&m, &id, &Decide::new(StateRef::Int(2)));
    assert!(
        matches!(refused, Err(Error::StateLimitReached { limit: 1, .. })),
        "[{}] a second state: {refused:?}",
        s.backend()
    );
    ok(s, s.decide(&m, &id, &Decide::new(StateRef::Int(1))));
    assert_eq!(calls(s, &a.id), 3, "[{}] the refusal is free", s.backend());
    let page = log_page(s, &a.id, &id);
    assert_eq!(
        page.total,
        Some(2),
        "[{}] nothing logged when refused",
        s.backend()
    );
}

/// Another user's model is NotFound for every decision call, and a
/// decision id of another model is unknown; turning decisions off
/// discards the log and makes predict plain again.
pub fn decision_isolation<S: Store>(s: &S) {
    let a = new_user(s, "a@example.com");
    let b = new_user(s, "b@example.com");
    let id = logging_model(s, &a.id, &seeded(2, 5), setting(600, None));
    let theirs = logging_model(s, &b.id, &seeded(2, 5), setting(600, None));
    let l = limits(None, None);
    let ma = Meter {
        user_id: &a.id,
        limits: &l,
        now: NOW,
    };
    let mb = Meter {
        user_id: &b.id,
        ..ma
    };
    let d = ok(
        s,
        s.decide(&ma, &id, &Decide::new(StateRef::Int(1)).episode("e")),
    );
    let d = d.decision.expect("logged");
    assert!(
        nf(&s.decide(&mb, &id, &Decide::new(StateRef::Int(1)))),
        "[{}]",
        s.backend()
    );
    assert!(nf(&s.reward(
        &mb,
        &id,
        reward(&d.decision_id, 1.0, None, true)
    )));
    assert!(nf(&s.end_episode(&mb, &id, "e", &EpisodeEnd::terminated())));
    assert!(nf(&s.decisions(&b.id, &id, &DecisionQuery::default())));
    // The decision id means nothing on b's own model.
    let r = s.reward(&mb, &theirs, reward(&d.decision_id, 1.0, None, true));
    assert!(nf(&r), "[{}] another model's decision: {r:?}", s.backend());
    assert_eq!(
        calls(s, &b.id),
        0,
        "[{}] refused calls are free",
        s.backend()
    );

    // Off: the log is gone and predict is plain.
    let info = ok(
        s,
        s.update_model(
            &a.id,
            &id,
            ModelPatch {
                decisions: Some(None),
                ..ModelPatch::default()
            },
            NOW,
        ),
    );
    assert_eq!(info.decisions, None);
    let page = log_page(s, &a.id, &id);
    assert_eq!(page.total, Some(0), "[{}] log discarded", s.backend());
    let plain = ok(s, s.decide(&ma, &id, &Decide::new(StateRef::Int(1))));
    assert!(plain.decision.is_none(), "[{}] plain predict", s.backend());
    let r = s.reward(&ma, &id, reward(&d.decision_id, 1.0, None, true));
    assert!(nf(&r), "[{}] no log, no decision: {r:?}", s.backend());
    // An invalid setting is refused with the field named, changing nothing.
    let bad = s.update_model(
        &b.id,
        &theirs,
        ModelPatch {
            decisions: Some(Some(setting(31 * 86_400, None))),
            ..ModelPatch::default()
        },
        NOW,
    );
    assert!(
        matches!(bad, Err(Error::InvalidField { .. })),
        "[{}] {bad:?}",
        s.backend()
    );
    assert!(ok(s, s.model(&b.id, &theirs)).decisions.is_some());
}

/// The log's counts (in the model's statistics and in the listing), the
/// order each transition was applied in (`applied_seq`: 1, 2, 3... per
/// model, deadlines in deadline order), a late reward on a settled
/// decision, and retention: a settlement past it forgets the finished
/// decisions (their counts stay).
pub fn decision_counts_order_and_retention<S: Store>(s: &S) {
    let a = new_user(s, "a@example.com");
    let local = seeded(3, 5);
    let mut c = setting(60, Some(0.0));
    c.retention_days = 1;
    let id = logging_model(s, &a.id, &local, c);
    let l = limits(None, None);
    let at = |now: i64| Meter {
        user_id: &a.id,
        limits: &l,
        now,
    };
    let m = at(NOW);
    let d = |st: i64| {
        let got = ok(s, s.decide(&m, &id, &Decide::new(StateRef::Int(st))));
        got.decision.expect("logged").decision_id
    };
    let (d0, d1, d2) = (d(0), d(1), d(2));
    let counts = |st: qlearn_core::decisions::DecisionStats| {
        (
            st.decisions,
            st.rewards,
            st.pending,
            st.applied,
            st.defaulted,
            st.late,
        )
    };
    let got = ok(s, s.reward(&m, &id, reward(&d1, 2.0, None, true)));
    assert_eq!(got.status, RewardStatus::Applied, "[{}]", s.backend());
    ok(s, s.reward(&m, &id, reward(&d0, 1.0, None, false)));
    let stats = ok(s, s.model(&a.id, &id)).decision_stats;
    let stats = stats.unwrap_or_else(|| panic!("[{}] counts in the model", s.backend()));
    assert_eq!(counts(stats), (3, 2, 2, 1, 0, 0), "[{}]", s.backend());
    let page = log_page(s, &a.id, &id);
    assert_eq!(page.stats, stats, "[{}] the listing's counts", s.backend());
    let order = |page: &qlearn_core::store::DecisionPage| -> Vec<Option<u64>> {
        [&d0, &d1, &d2]
            .iter()
            .map(|want| {
                let rec = page.decisions.iter().find(|r| &r.decision_id == *want);
                rec.and_then(|r| r.applied_seq)
            })
            .collect()
    };
    assert_eq!(order(&page), [None, Some(1), None], "[{}]", s.backend());
    // The deadlines: d0 with its reward, d2 with the default, in deadline
    // order (equal deadlines by id).
    assert_eq!(ok(s, s.settle(NOW + 61)), 2, "[{}]", s.backend());
    let page = log_page(s, &a.id, &id);
    assert_eq!(
        order(&page),
        [Some(2), Some(1), Some(3)],
        "[{}]",
        s.backend()
    );
    assert_eq!(counts(page.stats), (3, 2, 0, 3, 1, 0), "[{}]", s.backend());
    let rewarded = |id: &str| {
        page.decisions
            .iter()
            .find(|r| r.decision_id == id)
            .unwrap()
            .learned_reward
    };
    assert_eq!((rewarded(&d0), rewarded(&d2)), (Some(1.0), Some(0.0)));
    // A reward after the window: recorded as late, free, not learned.
    let updates = ok(s, s.model(&a.id, &id)).stats.updates;
    let late = ok(
        s,
        s.reward(&at(NOW + 62), &id, reward(&d2, 5.0, None, false)),
    );
    assert_eq!(late.status, RewardStatus::Late, "[{}]", s.backend());
    let info = ok(s, s.model(&a.id, &id));
    assert_eq!(
        info.stats.updates,
        updates,
        "[{}] late is not learned",
        s.backend()
    );
    assert_eq!(counts(info.decision_stats.unwrap()), (3, 2, 0, 3, 1, 1));
    // Retention (1 day): two days later the settled decisions are gone.
    ok(s, s.settle(NOW + 2 * 86_400));
    let page = log_page(s, &a.id, &id);
    assert_eq!(page.total, Some(0), "[{}] pruned", s.backend());
    assert_eq!(counts(page.stats), (3, 2, 0, 3, 1, 1), "[{}]", s.backend());
    let gone = s.reward(&at(NOW + 2 * 86_400), &id, reward(&d0, 1.0, None, false));
    assert!(nf(&gone), "[{}] {gone:?}", s.backend());
}

/// An episode's earlier step rewarded after its later step was learned
/// (and, in a store that keeps finished decisions only in storage, left
/// memory): the transition still bootstraps from the later step's state
/// and action, as `update` would.
pub fn decision_late_step_after_next_learned<S: Store>(s: &S) {
    let a = new_user(s, "a@example.com");
    let mut local = seeded(3, 9);
    let id = logging_model(s, &a.id, &local, setting(3600, None));
    let l = limits(None, None);
    let m = Meter {
        user_id: &a.id,
        limits: &l,
        now: NOW,
    };
    let (s0, s1) = (StateRef::Int(10), StateRef::Int(11));
    let step = |st| ok(s, s.decide(&m, &id, &Decide::new(st).episode("e")));
    let (p0, p1) = (step(s0), step(s1));
    let (d0, d1) = (p0.decision.unwrap(), p1.decision.unwrap());
    local.predict_full(s0, true, None).unwrap();
    local.predict_full(s1, true, None).unwrap();
    ok(
        s,
        s.reward(&m, &id, reward(&d1.decision_id, 3.0, None, true)),
    );
    assert_eq!(
        ok(s, s.end_episode(&m, &id, "e", &EpisodeEnd::terminated())),
        1
    );
    local.update(&exp(s1, d1.action, 3.0, None)).unwrap();
    // Another call on the model in between (a store may drop the learned
    // step from memory once its write has committed).
    let other = ok(s, s.decide(&m, &id, &Decide::new(StateRef::Int(12))));
    local.predict_full(StateRef::Int(12), true, None).unwrap();
    assert!(other.decision.is_some());
    let got = ok(
        s,
        s.reward(&m, &id, reward(&d0.decision_id, -1.0, None, true)),
    );
    assert_eq!(got.status, RewardStatus::Applied, "[{}]", s.backend());
    local
        .update(&exp(s0, d0.action, -1.0, Some((s1, d1.action))))
        .unwrap();
    let stored = ok(s, s.export_model(&a.id, &id));
    assert_eq!(
        stored.to_bytes().unwrap(),
        local.to_bytes().unwrap(),
        "[{}] the Q-table of the same transitions",
        s.backend()
    );
}
