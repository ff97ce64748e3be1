//! The decision listing's filters and paging (`Store::decisions`), at
//! their edges, and the episode listing (`Store::episodes`), on every
//! backend.

use qlearn_core::decisions::{Decide, DecisionStatus, EpisodeEnd, Outcome};
use qlearn_core::evaluation::LoggedStep;
use qlearn_core::store::{DecisionKeyset, DecisionQuery, EpisodePage, EpisodeQuery, Meter, Store};
use qlearn_core::{Error, StateRef};

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
        (Some(1), vec![ids[0].clone()]),
        "[{b}] until"
    );
    assert_eq!(
        list(q(Some(t1), None)),
        (Some(2), vec![ids[1].clone(), ids[2].clone()]),
        "[{b}] since"
    );
    assert_eq!(
        list(q(Some(t1), Some(t2))),
        (Some(1), vec![ids[1].clone()]),
        "[{b}] since and until"
    );
    let status = |st| DecisionQuery {
        status: Some(st),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(
        list(status(DecisionStatus::Applied)),
        (Some(1), vec![ids[0].clone()]),
        "[{b}] applied"
    );
    assert_eq!(
        list(status(DecisionStatus::Open)),
        (Some(2), vec![ids[1].clone(), ids[2].clone()]),
        "[{b}] open"
    );
    let paged = DecisionQuery {
        offset: 1,
        limit: 1,
        ..Default::default()
    };
    assert_eq!(list(paged), (Some(3), vec![ids[1].clone()]), "[{b}] paged");
    // Newest first: the same order reversed, paged from the newest; a
    // query may leave the total uncounted.
    let newest = |offset: u64, without_total: bool| DecisionQuery {
        offset,
        limit: 2,
        newest_first: true,
        without_total,
        ..Default::default()
    };
    assert_eq!(
        list(newest(0, false)),
        (Some(3), vec![ids[2].clone(), ids[1].clone()]),
        "[{b}] newest first"
    );
    assert_eq!(
        list(newest(2, true)),
        (None, vec![ids[0].clone()]),
        "[{b}] newest first, the next page, uncounted"
    );
    let open_newest = DecisionQuery {
        status: Some(DecisionStatus::Open),
        since_ms: Some(t0),
        until_ms: Some(t2 + 1),
        limit: 10,
        newest_first: true,
        without_total: true,
        ..Default::default()
    };
    assert_eq!(
        list(open_newest),
        (None, vec![ids[2].clone(), ids[1].clone()]),
        "[{b}] open, in a time range, newest first, uncounted"
    );
    // Decisions logged in the same second list by id (descending when
    // newest first).
    for k in ["t-b", "t-a"] {
        let mut d = Decide::new(StateRef::Int(1));
        d.decision_id = Some(k);
        ok(s, s.decide(&at(NOW + 10), &id, &d));
    }
    let same = |newest_first: bool| DecisionQuery {
        limit: 2,
        newest_first,
        offset: if newest_first { 0 } else { 3 },
        ..Default::default()
    };
    assert_eq!(
        list(same(true)),
        (Some(5), vec!["t-b".to_string(), "t-a".to_string()]),
        "[{b}] same time, newest first"
    );
    assert_eq!(
        list(same(false)),
        (Some(5), vec!["t-a".to_string(), "t-b".to_string()]),
        "[{b}] same time, oldest first"
    );
    // A cursor (the last decision of a page) gives the next page in either
    // order, across decisions of the same second; the count ignores it.
    let (t_same, _) = {
        let p = ok(s, s.decisions(&a.id, &id, &same(true)));
        (p.decisions[0].time_ms, p.decisions[0].decision_id.clone())
    };
    for (newest_first, want) in [
        (
            true,
            vec![
                vec!["t-b", "t-a"],
                vec![ids[2].as_str(), ids[1].as_str()],
                vec![ids[0].as_str()],
            ],
        ),
        (
            false,
            vec![
                vec![ids[0].as_str(), ids[1].as_str()],
                vec![ids[2].as_str(), "t-a"],
                vec!["t-b"],
            ],
        ),
    ] {
        let mut after = None;
        for (k, page_want) in want.iter().enumerate() {
            let got = ok(
                s,
                s.decisions(
                    &a.id,
                    &id,
                    &DecisionQuery {
                        limit: 2,
                        newest_first,
                        after: after.clone(),
                        ..Default::default()
                    },
                ),
            );
            let got_ids: Vec<&str> = got
                .decisions
                .iter()
                .map(|r| r.decision_id.as_str())
                .collect();
            assert_eq!(
                (got.total, &got_ids),
                (Some(5), page_want),
                "[{b}] page {k}, newest first {newest_first}"
            );
            after = got
                .decisions
                .last()
                .map(|r| (r.time_ms, r.decision_id.clone()));
        }
    }
    // A cursor between two decisions of the same second.
    let mid_second = DecisionQuery {
        limit: 10,
        newest_first: true,
        after: Some((t_same, "t-az".to_string())),
        without_total: true,
        ..Default::default()
    };
    assert_eq!(
        list(mid_second),
        (
            None,
            vec![
                "t-a".to_string(),
                ids[2].clone(),
                ids[1].clone(),
                ids[0].clone()
            ]
        ),
        "[{b}] past a cursor inside a second"
    );
}

/// The episode listing (`Store::episodes`): steps, the return learned so
/// far (the learned rewards summed per episode, never mixed between
/// concurrent episodes), how each ended, its first and last decision's
/// times; the status filter and keyset paging in bytewise id order;
/// another owner's model is not found, a model without decisions has no
/// episodes.
pub fn decision_episodes<S: Store>(s: &S) {
    let a = new_user(s, "a@example.com");
    let b = new_user(s, "b@example.com");
    let local = seeded(3, 5);
    let id = logging_model(s, &a.id, &local, setting(3600, None));
    let l = limits(None, None);
    let at = |now: i64| Meter {
        user_id: &a.id,
        limits: &l,
        now,
    };
    let decide = |now: i64, ep: &str, k: i64| {
        let mut d = Decide::new(StateRef::Int(k));
        d.episode_id = Some(ep);
        ok(s, s.decide(&at(now), &id, &d)).decision.expect("logged")
    };
    // "e2": two steps interleaved with "E9"'s one, both rewarded; "E9"
    // ends terminated, "e2" goes on; "e3" ends truncated after one step.
    let e2a = decide(NOW, "e2", 0);
    let e1 = decide(NOW + 1, "E9", 1);
    let e2b = decide(NOW + 2, "e2", 2);
    let e3 = decide(NOW + 3, "e3", 1);
    for (d, v) in [(&e2a, 1.5), (&e1, -4.0), (&e2b, 0.25), (&e3, 2.0)] {
        ok(
            s,
            s.reward(&at(NOW + 4), &id, reward(&d.decision_id, v, None, true)),
        );
    }
    let end = EpisodeEnd::terminated();
    assert_eq!(ok(s, s.end_episode(&at(NOW + 5), &id, "E9", &end)), 1);
    let truncated = EpisodeEnd {
        outcome: Outcome::Truncated,
        next_state: Some(qlearn_core::State::Int(2)),
        next_allowed_actions: None,
    };
    ok(s, s.end_episode(&at(NOW + 5), &id, "e3", &truncated));
    let all = EpisodeQuery {
        limit: 10,
        ..EpisodeQuery::default()
    };
    let page = ok(s, s.episodes(&a.id, &id, &all));
    let got: Vec<_> = page
        .episodes
        .iter()
        .map(|e| {
            let ep = e.episode_id.as_str();
            (
                ep,
                e.steps,
                e.learned_return,
                e.outcome,
                e.started_ms,
                e.last_ms,
            )
        })
        .collect();
    let ms = |t: i64| Some(t * 1000);
    assert_eq!(
        got,
        [
            (
                "E9",
                1,
                -4.0,
                Some(Outcome::Terminated),
                ms(NOW + 1),
                ms(NOW + 1)
            ),
            ("e2", 2, 1.5, None, ms(NOW), ms(NOW + 2)),
            (
                "e3",
                1,
                2.0,
                Some(Outcome::Truncated),
                ms(NOW + 3),
                ms(NOW + 3)
            ),
        ],
        "[{}] episodes in bytewise id order; e2's last step waits for its next",
        s.backend()
    );
    assert!(!page.more);
    let q = |ended: Option<bool>, after: Option<&str>, limit: u64| EpisodeQuery {
        ended,
        after: after.map(str::to_owned),
        limit,
    };
    let ids = |q: EpisodeQuery| -> (Vec<String>, bool) {
        let p = ok(s, s.episodes(&a.id, &id, &q));
        (
            p.episodes.into_iter().map(|e| e.episode_id).collect(),
            p.more,
        )
    };
    let v = |x: &[&str], more: bool| (x.iter().map(|s| s.to_string()).collect(), more);
    assert_eq!(
        ids(q(Some(false), None, 10)),
        v(&["e2"], false),
        "[{}]",
        s.backend()
    );
    assert_eq!(ids(q(Some(true), None, 10)), v(&["E9", "e3"], false));
    assert_eq!(ids(q(None, None, 1)), v(&["E9"], true), "[{}]", s.backend());
    assert_eq!(ids(q(None, Some("E9"), 1)), v(&["e2"], true));
    assert_eq!(ids(q(None, Some("e2"), 1)), v(&["e3"], false));
    assert_eq!(ids(q(Some(true), Some("E9"), 5)), v(&["e3"], false));
    assert_eq!(ids(q(None, Some("e3"), 5)), v(&[], false));
    // Another owner's model, an unknown one, one without decisions.
    assert!(matches!(
        s.episodes(&b.id, &id, &all),
        Err(qlearn_core::Error::NotFound(_))
    ));
    assert!(matches!(
        s.episodes(&a.id, "nope", &all),
        Err(qlearn_core::Error::NotFound(_))
    ));
    let plain = ok(s, s.create_model(&a.id, "plain", &local, None, NOW)).id;
    assert_eq!(
        ok(s, s.episodes(&a.id, &plain, &all)),
        EpisodePage::default()
    );
}

/// A baseline action recorded with a decision (issue 18's `baseline`
/// policy): checked against the model's actions (a bad one logs nothing),
/// kept through rewards, listed, read by the evaluation's keyset and
/// `LoggedStep`, part of a retry's identity (another baseline, or none, is
/// a conflict, as another state is); refused on a model that logs no
/// decisions. Other models are used in between, so a small cache evicts
/// the logging model and reloads it from storage.
pub fn decision_baseline_actions<S: Store>(s: &S) {
    let a = new_user(s, "a@example.com");
    let id = logging_model(s, &a.id, &seeded(3, 5), setting(60, None));
    let l = limits(None, None);
    let m = Meter {
        user_id: &a.id,
        limits: &l,
        now: NOW,
    };
    let b = s.backend();
    let with = ok(
        s,
        s.decide(&m, &id, &Decide::new(StateRef::Int(1)).id("b1").baseline(2)),
    );
    let with = with.decision.expect("logged");
    ok(
        s,
        s.decide(&m, &id, &Decide::new(StateRef::Int(2)).id("b0")),
    );
    let bad = s.decide(&m, &id, &Decide::new(StateRef::Int(3)).id("b3").baseline(3));
    assert!(
        matches!(&bad, Err(Error::InvalidField { field, .. }) if field == "baseline_action"),
        "[{b}] baseline 3 of 3 actions: {bad:?}"
    );
    // Plain models, each used: the logging model leaves a small cache.
    for k in 0..6 {
        let plain = ok(
            s,
            s.create_model(&a.id, &format!("p{k}"), &seeded(3, k), None, NOW),
        );
        ok(
            s,
            s.predict(&m, &plain.id, StateRef::Int(k as i64), true, None),
        );
        let refused = s.decide(&m, &plain.id, &Decide::new(StateRef::Int(1)).baseline(0));
        assert!(
            matches!(&refused, Err(Error::InvalidField { field, .. }) if field == "baseline_action"),
            "[{b}] a baseline on a model without decisions: {refused:?}"
        );
    }
    let retry = ok(
        s,
        s.decide(&m, &id, &Decide::new(StateRef::Int(1)).id("b1").baseline(2)),
    );
    let retry = retry.decision.expect("logged");
    assert!(retry.replayed && retry.action == with.action, "[{b}] retry");
    for other in [
        Decide::new(StateRef::Int(1)).id("b1").baseline(1),
        Decide::new(StateRef::Int(1)).id("b1"),
    ] {
        let r = s.decide(&m, &id, &other);
        assert!(
            matches!(r, Err(Error::Conflict(_))),
            "[{b}] {other:?}: {r:?}"
        );
    }
    ok(s, s.reward(&m, &id, reward("b1", 1.0, None, true)));
    let page = log_page(s, &a.id, &id);
    assert_eq!(
        page.total,
        Some(2),
        "[{b}] the refused decision is not logged"
    );
    let baseline = |id: &str| {
        let rec = page
            .decisions
            .iter()
            .find(|r| r.decision_id == id)
            .unwrap_or_else(|| panic!("[{b}] {id} listed"));
        (rec.status, rec.baseline_action)
    };
    assert_eq!(baseline("b1"), (DecisionStatus::Applied, Some(2)), "[{b}]");
    assert_eq!(baseline("b0"), (DecisionStatus::Open, None), "[{b}]");
    let q = DecisionKeyset {
        limit: 10,
        ..DecisionKeyset::default()
    };
    let keyset = ok(s, s.decisions_keyset(&a.id, &id, &q));
    let steps: Vec<(String, Option<usize>)> = keyset
        .iter()
        .map(|r| {
            let step = LoggedStep::from_record(r).expect("a step");
            (step.decision_id, step.baseline_action)
        })
        .collect();
    assert_eq!(
        steps,
        [("b1".to_owned(), Some(2)), ("b0".to_owned(), None)],
        "[{b}] newest first (same time: by id)"
    );
}
