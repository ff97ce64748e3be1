//! Conformance checks of the settle pass (listed in `conformance_tests!`
//! with the rest of the suite): it must find every model with a decision
//! past its deadline, however the models' numbers and deadlines
//! interleave, and settle only those decisions; and a model's backlog of
//! more than a chunk must settle whole in one pass, learning what passes on
//! time would have learned.

use qlearn_core::decisions::Decide;
use qlearn_core::store::decisions::{FULL_SCAN_EVERY_SECS, SETTLE_CHUNK};
use qlearn_core::store::{DecisionQuery, Store};
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

/// Decisions logged between two passes, due before the SQL stores' next
/// full scan of the models with open decisions
/// ([`FULL_SCAN_EVERY_SECS`]): one on a model whose earliest known deadline
/// is a day away, one on a model with none open at the last pass. Each
/// must be settled by the first pass after its deadline, not left until a
/// scan. A third, logged on another model with a day's window, stays open.
pub fn decision_settle_finds_decisions_logged_since_the_last_pass<S: Store>(s: &S) {
    let l = limits(None, None);
    let name = s.backend();
    let user = new_user(s, "settle-since@example.com");
    let day = logging_model(s, &user.id, &seeded(3, 5), setting(86_400, Some(0.0)));
    let short = logging_model(s, &user.id, &seeded(3, 5), setting(3, Some(0.0)));
    let decide = |id: &str, at: i64, st: i64| {
        let m = meter(&user.id, &l, at);
        ok(s, s.decide(&m, id, &Decide::new(StateRef::Int(st))));
    };
    decide(&day, NOW, 0);
    assert_eq!(ok(s, s.settle(NOW + 1)), 0, "[{name}] a day away");
    // The day model's settings now give a 3 s window to its next decision.
    let patch = qlearn_core::store::ModelPatch {
        decisions: Some(Some(setting(3, Some(0.0)))),
        ..Default::default()
    };
    ok(s, s.update_model(&user.id, &day, patch, NOW + 2));
    decide(&day, NOW + 2, 1);
    decide(&short, NOW + 2, 2);
    const { assert!(FULL_SCAN_EVERY_SECS > 8, "the passes fall between scans") };
    assert_eq!(ok(s, s.settle(NOW + 4)), 0, "[{name}] not due yet");
    assert_eq!(
        ok(s, s.settle(NOW + 5)),
        2,
        "[{name}] both logged since the last pass, at their deadline"
    );
    let pending = |id: &str| log_page(s, &user.id, id).stats.pending;
    assert_eq!(
        (pending(&day), pending(&short)),
        (1, 0),
        "[{name}] the day's decision stays open"
    );
    assert_eq!(ok(s, s.settle(NOW + 6)), 0, "[{name}] nothing more");
}

/// Two identical models log the same decisions, three to a second (so
/// deadlines tie, also across a chunk's end), each second's last in one of
/// seven episodes taking turns and the rest in none (so that a settle
/// does not read a deadline's other decisions as some episode's steps),
/// with a
/// 60 s window and a default reward. The first model's decisions are
/// settled by passes every 100 s, each closing fewer than a chunk; the
/// second model's, more than two chunks ([`SETTLE_CHUNK`]), all fall due
/// together, as after an outage, and one pass must settle them all (in
/// chunks, on the SQL stores). Both must then have learned each decision
/// at the same place in order (`applied_seq`), and hold the same Q-values
/// and counts: the chunks close decisions in closing order (deadline, then
/// id), as one pass does.
pub fn decision_settle_works_through_a_backlog_in_chunks<S: Store>(s: &S) {
    let l = limits(None, None);
    let user = new_user(s, "backlog@example.com");
    let n = 2 * SETTLE_CHUNK as i64 + 7;
    let name = s.backend();
    let log_all = |id: &str, t0: i64| {
        for i in 0..n {
            let episode = format!("e{}", (i / 3) % 7);
            let d = Decide::new(StateRef::Int(i % 5));
            let d = if i % 3 == 2 { d.episode(&episode) } else { d };
            ok(s, s.decide(&meter(&user.id, &l, t0 + i / 3), id, &d));
        }
    };
    let on_time = logging_model(s, &user.id, &seeded(3, 5), setting(60, Some(0.5)));
    log_all(&on_time, NOW);
    // Passes every 100 s until past the last deadline.
    let last_deadline = NOW + (n - 1) / 3 + 60;
    let mut t = NOW;
    let mut learned_on_time = 0;
    while t <= last_deadline {
        t += 100;
        learned_on_time += ok(s, s.settle(t));
    }
    let stats = log_page(s, &user.id, &on_time).stats;
    // Every window closed; an episode's last step waits for its next state.
    assert_eq!(stats.defaulted, n as u64, "[{name}] on time: {stats:?}");
    let backlog = logging_model(s, &user.id, &seeded(3, 5), setting(60, Some(0.5)));
    let t0 = t + 10_000;
    log_all(&backlog, t0);
    let pending = log_page(s, &user.id, &backlog).stats.pending;
    assert_eq!(pending, n as u64, "[{name}] the backlog");
    let learned = ok(s, s.settle(t0 + (n - 1) / 3 + 61));
    assert_eq!(
        log_page(s, &user.id, &backlog).stats,
        stats,
        "[{name}] one pass settles the whole backlog"
    );
    assert_eq!(learned, learned_on_time, "[{name}] learned");
    assert!(
        learned > SETTLE_CHUNK as usize,
        "[{name}] learned {learned}"
    );
    // Each decision's place in the order of learning (`applied_seq`).
    let order = |id: &str| {
        let mut seq = Vec::new();
        let mut offset = 0;
        loop {
            let q = DecisionQuery {
                offset,
                limit: 500,
                ..Default::default()
            };
            let page = ok(s, s.decisions(&user.id, id, &q));
            if page.decisions.is_empty() {
                break;
            }
            offset += page.decisions.len() as u64;
            seq.extend(
                page.decisions
                    .into_iter()
                    .map(|d| (d.decision_id, d.applied_seq)),
            );
        }
        seq.sort();
        seq
    };
    let learned_order = order(&on_time);
    assert_eq!(learned_order.len(), n as usize, "[{name}] listed");
    let backlog_order = order(&backlog);
    let first_difference = learned_order
        .iter()
        .zip(&backlog_order)
        .find(|(a, b)| a != b);
    assert_eq!(
        first_difference, None,
        "[{name}] the order of learning (on time, backlog)"
    );
    let (a, b) = (
        ok(s, s.export_model(&user.id, &on_time)),
        ok(s, s.export_model(&user.id, &backlog)),
    );
    assert_eq!(a.stats().updates, b.stats().updates, "[{name}] updates");
    assert_eq!(a.rows(0, 100), b.rows(0, 100), "[{name}] the Q-values");
}
