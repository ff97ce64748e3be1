//! The change feed: a store shared by several processes tells every
//! instance of each committed change (users, keys, models) and carries
//! live events between instances; a store that is never shared has none.

use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

use qlearn_core::store::{
    Change, ChangeFeed, ChangeSink, ModelPatch, Store, StreamPlace, TicketGrant,
};
use qlearn_core::tenancy::{Role, Tier};

use super::{full_key, new_user, ok, seeded, NOW};

/// How long a notice may take in these checks (it takes milliseconds).
const WAIT: Duration = Duration::from_secs(5);

fn open_feed<S: Store>(s: &S) -> Option<(Arc<dyn ChangeFeed>, Receiver<Change>)> {
    let (tx, rx) = channel();
    let sink: ChangeSink = Arc::new(move |c| {
        let _ = tx.send(c);
    });
    let feed = ok(s, s.change_feed(sink))?;
    Some((feed, rx))
}

/// The next change that is not [`Change::All`] (a reconnection may add
/// one anywhere), or `None` after [`WAIT`].
fn next(rx: &Receiver<Change>) -> Option<Change> {
    let until = Instant::now() + WAIT;
    loop {
        let left = until.checked_duration_since(Instant::now())?;
        match rx.recv_timeout(left).ok()? {
            Change::All => continue,
            c => return Some(c),
        }
    }
}

/// Every change to a user or model reaches the feed once committed, in
/// order (and a refused change sends nothing); events published by one
/// instance reach another that watches the model, whole however long, and
/// never come back to the publisher.
pub fn change_feed<S: Store>(s: &S) {
    let Some((feed, rx)) = open_feed(s) else {
        check!(
            s,
            s.backend() != "postgres",
            "a store shared by instances has a change feed"
        );
        return;
    };
    check_eq!(
        s,
        rx.recv_timeout(WAIT).ok(),
        Some(Change::All),
        "first notice"
    );
    let a = new_user(s, "a@example.com");
    let user = || Some(Change::User(a.id.clone()));
    ok(s, s.set_tier(&a.id, Tier::Pro));
    check_eq!(s, next(&rx), user(), "tier");
    ok(s, s.set_role(&a.id, Role::Admin));
    check_eq!(s, next(&rx), user(), "role");
    ok(s, s.set_disabled(&a.id, true));
    check_eq!(s, next(&rx), user(), "disabled");
    ok(s, s.set_disabled(&a.id, false));
    check_eq!(s, next(&rx), user(), "enabled");
    let k = ok(s, s.create_api_key(&a.id, full_key("k", "qk", "h1"), NOW));
    check_eq!(s, next(&rx), user(), "key created");
    check!(s, s.delete_api_key(&a.id, "nope").is_err(), "unknown key");
    ok(s, s.delete_api_key(&a.id, &k.id));
    check_eq!(
        s,
        next(&rx),
        user(),
        "key deleted (the refused delete said nothing)"
    );
    ok(s, s.set_password(&a.id, "$argon2id$other", NOW + 1));
    check_eq!(s, next(&rx), user(), "password");
    let m = ok(s, s.create_model(&a.id, "m", &seeded(2, 1), None, NOW)).id;
    let model = || Some(Change::Model(m.clone()));
    check_eq!(s, next(&rx), model(), "model created");
    let patch = ModelPatch {
        name: Some("renamed".into()),
        ..ModelPatch::default()
    };
    ok(s, s.update_model(&a.id, &m, patch, NOW + 2));
    check_eq!(s, next(&rx), model(), "model changed");
    ok(s, s.delete_model(&a.id, &m));
    check_eq!(s, next(&rx), model(), "model deleted");

    // Events: a second instance watches; the first publishes to it.
    let Some((other, other_rx)) = open_feed(s) else {
        panic!("[{}] a second feed", s.backend());
    };
    check!(s, !feed.watched_elsewhere("mx"), "nobody watches yet");
    ok(s, other.watch("mx"));
    let until = Instant::now() + WAIT;
    while !feed.watched_elsewhere("mx") && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    check!(s, feed.watched_elsewhere("mx"), "the watch is heard");
    check!(
        s,
        !other.watched_elsewhere("mx"),
        "its own watch is not elsewhere"
    );
    let frames = format!("event: update\ndata: {}\n\n", "é☃x".repeat(9_000));
    ok(s, feed.publish("mx", &frames));
    ok(s, feed.publish("unwatched", "event: update\ndata: {}\n\n"));
    let got = next(&other_rx);
    check!(
        s,
        got == Some(Change::Event {
            model_id: "mx".into(),
            frames: frames.clone()
        }),
        "the event arrives whole: {:?}",
        got.map(|c| match c {
            Change::Event { frames: f, .. } => format!(
                "{} bytes of {}, differing from byte {:?}",
                f.len(),
                frames.len(),
                f.bytes().zip(frames.bytes()).position(|(a, b)| a != b)
            ),
            other => format!("{other:?}"),
        })
    );
    other.unwatch("mx");
    let until = Instant::now() + WAIT;
    while feed.watched_elsewhere("mx") && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    check!(s, !feed.watched_elsewhere("mx"), "the unwatch is heard");
    // Nothing else arrived: not the unwatched model's event, not our own.
    std::thread::sleep(Duration::from_millis(200));
    let rest: Vec<Change> = other_rx
        .try_iter()
        .chain(rx.try_iter())
        .filter(|c| *c != Change::All)
        .collect();
    check_eq!(s, rest, vec![], "no other notices");
}

/// A store shared by instances keeps token buckets all of them see: under
/// concurrent takes (whole or partial) no more tokens are granted than
/// the bucket holds, a refusal says how long to wait, a refund and a
/// reset give tokens back. A store never shared has none.
pub fn shared_buckets<S: Store>(s: &S) {
    let Some(b) = s.shared_buckets() else {
        check!(
            s,
            s.backend() != "postgres",
            "a store shared by instances shares its buckets"
        );
        return;
    };
    // A slow refill (one token per 1,000 s): what is granted is the burst.
    let (rate, burst) = (0.001, 50.0);
    let granted: f64 = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..8)
            .map(|i| {
                let b = &b;
                sc.spawn(move || {
                    let want = if i % 2 == 0 { 1.0 } else { 3.0 };
                    (0..20)
                        .map(|_| b.take("k", 1.0, want, rate, burst).unwrap().granted)
                        .sum::<f64>()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum()
    });
    check_eq!(s, granted, burst, "exactly the burst is granted");
    let t = ok(s, b.take("k", 1.0, 1.0, rate, burst));
    check_eq!(s, t.granted, 0.0);
    check!(s, t.wait_secs > 900.0, "wait {}", t.wait_secs);
    ok(s, b.give("k", 2.0));
    check_eq!(s, ok(s, b.take("k", 1.0, 5.0, rate, burst)).granted, 2.0);
    ok(s, b.forget("k"));
    check_eq!(s, ok(s, b.take("k", 1.0, 80.0, rate, burst)).granted, burst);
    // A fast refill: tokens come back by the database's clock.
    check_eq!(s, ok(s, b.take("f", 2.0, 2.0, 20.0, 2.0)).granted, 2.0);
    std::thread::sleep(Duration::from_millis(120));
    check_eq!(s, ok(s, b.take("f", 2.0, 2.0, 20.0, 2.0)).granted, 2.0);
}

/// A store shared by instances keeps event-stream tickets any instance
/// redeems exactly once, and counts the open streams of all instances
/// against the caps. A store never shared has neither.
pub fn shared_streams<S: Store>(s: &S) {
    let (Some(t), Some(st)) = (s.shared_tickets(), s.shared_streams()) else {
        check!(
            s,
            s.backend() != "postgres",
            "a store shared by instances shares tickets and streams"
        );
        return;
    };
    let a = new_user(s, "a@example.com");
    let ttl = Duration::from_secs(30);
    let x = ok(s, t.issue(&a.id, "m1", "credential-1", ttl, 2));
    let got = ok(s, t.redeem(&x));
    check_eq!(
        s,
        got,
        Some(TicketGrant {
            user_id: a.id.clone(),
            model_id: "m1".into(),
            credential: "credential-1".into(),
        })
    );
    check_eq!(s, ok(s, t.redeem(&x)), None, "single use");
    check_eq!(s, ok(s, t.redeem("made-up")), None);
    let late = ok(s, t.issue(&a.id, "m1", "c", Duration::ZERO, 2));
    check_eq!(s, ok(s, t.redeem(&late)), None, "expired");
    let all: Vec<String> = (0..3)
        .map(|i| ok(s, t.issue(&a.id, "m1", &format!("c{i}"), ttl, 2)))
        .collect();
    check_eq!(s, ok(s, t.redeem(&all[0])), None, "the oldest was dropped");
    check!(s, ok(s, t.redeem(&all[2])).is_some(), "the newest works");
    // Concurrent redemptions of one ticket: exactly one wins.
    let y = ok(s, t.issue(&a.id, "m1", "c", ttl, 2));
    let wins: usize = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..8)
            .map(|_| sc.spawn(|| usize::from(t.redeem(&y).unwrap().is_some())))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum()
    });
    check_eq!(s, wins, 1);

    // Stream places: at most 2 per user, 1 per model.
    let p1 = match ok(s, st.open(&a.id, "m1", 2, 1)) {
        StreamPlace::Opened(id) => id,
        other => panic!("[{}] {other:?}", s.backend()),
    };
    check_eq!(
        s,
        ok(s, st.open(&a.id, "m1", 2, 1)),
        StreamPlace::ModelFull(1)
    );
    check!(
        s,
        matches!(ok(s, st.open(&a.id, "m2", 2, 1)), StreamPlace::Opened(_)),
        "a second model"
    );
    check_eq!(
        s,
        ok(s, st.open(&a.id, "m3", 2, 1)),
        StreamPlace::UserFull(2)
    );
    ok(s, st.renew());
    ok(s, st.close(&p1));
    check!(
        s,
        matches!(ok(s, st.open(&a.id, "m3", 2, 1)), StreamPlace::Opened(_)),
        "a place given back"
    );
    check!(s, st.open("nobody", "m", 2, 1).is_err(), "unknown user");
}
