//! The decision listing's filters and paging (`Store::decisions`), at
//! their edges, on every backend.

use qlearn_core::decisions::{Decide, DecisionStatus};
use qlearn_core::store::{DecisionQuery, Meter, Store};
use qlearn_core::StateRef;

use super::decisions::{log_page, logging_model, reward, setting};
use super::{limits, new_user, ok, seeded, NOW};

/// The listing's filters and paging, at their edges: `until_ms` excludes a
/// decision logged at exactly that time and `since_ms` includes it; the
/// status filter; `offset`/`limit` within the filtered list, whose `total`
/// counts every match.
pub fn decision_listing_filters<S: Store>(s: &S) {
    let a = new_user(s, "a@example.com");
    let local = seeded(3, 5);
    let id = logging_model(s, &a.id, &local, setting(60, None));
    let l = limits(None, None);
    let at = |now: i64| Meter {
        user_id: &a.id,
        limits: &l,
        now,
    };
    // Three decisions, a second apart.
    let ids: Vec<String> = (0..3)
        .map(|k| {
            let got = ok(
                s,
                s.decide(&at(NOW + k), &id, &Decide::new(StateRef::Int(k))),
            );
            got.decision.expect("logged").decision_id
        })
        .collect();
    let all = log_page(s, &a.id, &id);
    let time = |want: &str| {
        all.decisions
            .iter()
            .find(|r| r.decision_id == want)
            .unwrap_or_else(|| panic!("[{}] {want} listed", s.backend()))
            .time_ms
    };
    let (t0, t1, t2) = (time(&ids[0]), time(&ids[1]), time(&ids[2]));
    assert!(t0 < t1 && t1 < t2, "[{}] {t0} {t1} {t2}", s.backend());
    ok(
        s,
        s.reward(&at(NOW + 3), &id, reward(&ids[0], 1.0, None, true)),
    );
    let list = |q: DecisionQuery| {
        let page = ok(s, s.decisions(&a.id, &id, &q));
        let got: Vec<String> = page.decisions.into_iter().map(|r| r.decision_id).collect();
        (page.total, got)
    };
    let q = |since: Option<i64>, until: Option<i64>| DecisionQuery {
        since_ms: since,
        until_ms: until,
        limit: 10,
        ..Default::default()
    };
    let b = s.backend();
    assert_eq!(
        list(q(None, Some(t1))),
        (1, vec![ids[0].clone()]),
        "[{b}] until"
    );
    assert_eq!(
        list(q(Some(t1), None)),
        (2, vec![ids[1].clone(), ids[2].clone()]),
        "[{b}] since"
    );
    assert_eq!(
        list(q(Some(t1), Some(t2))),
        (1, vec![ids[1].clone()]),
        "[{b}] since and until"
    );
    let status = |st| DecisionQuery {
        status: Some(st),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(
        list(status(DecisionStatus::Applied)),
        (1, vec![ids[0].clone()]),
        "[{b}] applied"
    );
    assert_eq!(
        list(status(DecisionStatus::Open)),
        (2, vec![ids[1].clone(), ids[2].clone()]),
        "[{b}] open"
    );
    let paged = DecisionQuery {
        offset: 1,
        limit: 1,
        ..Default::default()
    };
    assert_eq!(list(paged), (3, vec![ids[1].clone()]), "[{b}] paged");
}
