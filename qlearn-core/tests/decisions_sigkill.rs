//! Decisions survive `kill -9` (issue 14): a child process (this test
//! binary run again, in child mode) logs decisions and rewards them, or
//! settles passed deadlines, and is SIGKILLed mid-way; the parent reopens
//! the database and checks that every acknowledged reward was learned and
//! that every transition was applied exactly once: the model's update
//! count equals its applied decisions, their `applied_seq` are 1..n, and
//! replaying them in that order rebuilds the stored Q-table bit for bit.
//! Then it settles what is left and checks again. Against SQLite and
//! PostgreSQL (skipped loudly when unreachable, unless
//! `QLEARN_REQUIRE_POSTGRES=1`).
#![cfg(all(unix, feature = "sqlite", feature = "postgres"))]

mod child;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write as _};
use std::sync::Mutex;

use child::pg_url;
use qlearn_core::decisions::{Decide, DecisionStatus, DecisionsConfig};
use qlearn_core::store::postgres::PgStore;
use qlearn_core::store::sqlite::SqliteStore;
use qlearn_core::store::{DecisionQuery, Meter, ModelPatch, NewUser, RewardIn, Store};
use qlearn_core::tenancy::{Role, Tier, TierLimits};
use qlearn_core::{Experience, Model, ModelConfig, QRows, StateRef};

const CHILD_ENV: &str = "QLEARN_DECISIONS_SIGKILL_CHILD";
const NOW: i64 = 1_790_038_400;
const WAIT: u64 = 60;
const THREADS: i64 = 4;
/// Rewards acknowledged before the parent kills the rewarding child.
const KILL_AFTER: usize = 300;
/// Open decisions per model before the settling child starts.
const OPEN_PER_MODEL: i64 = 150;
const MODELS: usize = 4;
const UNLIMITED: TierLimits = TierLimits::UNLIMITED;

/// What the child needs: mode, backend, where, whose models.
struct Target {
    mode: String,
    backend: String,
    location: String,
    user: String,
    models: Vec<String>,
}

impl Target {
    fn encode(&self) -> String {
        format!(
            "{}\t{}\t{}\t{}\t{}",
            self.mode,
            self.backend,
            self.location,
            self.user,
            self.models.join(",")
        )
    }

    fn decode(s: &str) -> Option<Self> {
        let mut it = s.split('\t');
        Some(Target {
            mode: it.next()?.into(),
            backend: it.next()?.into(),
            location: it.next()?.into(),
            user: it.next()?.into(),
            models: it.next()?.split(',').map(str::to_owned).collect(),
        })
    }

    fn open(&self) -> Box<dyn Store> {
        match self.backend.as_str() {
            "sqlite" => Box::new(SqliteStore::open(&self.location).expect("open sqlite")),
            _ => Box::new(
                PgStore::connect_with_schema(&pg_url(), &self.location).expect("connect postgres"),
            ),
        }
    }
}

fn meter(user: &str) -> Meter<'_> {
    Meter {
        user_id: user,
        limits: &UNLIMITED,
        now: NOW,
    }
}

fn reward(id: String, value: f64) -> RewardIn {
    RewardIn {
        decision_id: id,
        value,
        reward_id: None,
        is_final: true,
    }
}

/// Child mode (does nothing in a normal run). `reward`: threads log a
/// decision and reward it (final), printing `ack <id>` once the reward
/// returned, until killed. `settle`: prints `settling`, then settles the
/// passed deadlines (the parent kills it meanwhile).
#[test]
fn sigkill_child_entry() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let t = Target::decode(&spec).expect("child: bad target");
    let store = t.open();
    if t.mode == "settle" {
        println!("settling");
        store.settle(NOW + WAIT as i64 + 1).expect("child: settle");
        println!("settled");
        return;
    }
    let out = Mutex::new(std::io::stdout());
    std::thread::scope(|sc| {
        for th in 0..THREADS {
            let (store, out, t) = (&store, &out, &t);
            sc.spawn(move || {
                let m = meter(&t.user);
                let model = &t.models[th as usize % t.models.len()];
                for k in 0.. {
                    let st = StateRef::Int(th * 1_000_000 + k % 50);
                    let d = store
                        .decide(&m, model, &Decide::new(st))
                        .expect("child: decide");
                    let id = d.decision.expect("child: logged").decision_id;
                    let value = (k % 7) as f64 - 3.0;
                    store
                        .reward(&m, model, reward(id.clone(), value))
                        .expect("child: reward");
                    let mut o = out.lock().unwrap_or_else(|p| p.into_inner());
                    let _ = writeln!(o, "ack {model} {id}");
                }
            });
        }
    });
}

/// A user and `MODELS` models logging decisions (a one-minute window, a
/// default reward of 0.5).
fn setup(store: &dyn Store) -> (String, Vec<String>) {
    let u = store
        .create_user(
            NewUser {
                email: "sigkill@example.com".into(),
                password_hash: "x".into(),
                tier: Tier::Enterprise,
                role: Role::User,
            },
            NOW,
        )
        .expect("create user");
    let models = (0..MODELS)
        .map(|i| {
            let m = store
                .create_model(
                    &u.id,
                    &format!("m{i}"),
                    &Model::new(config()).unwrap(),
                    None,
                    NOW,
                )
                .expect("create model")
                .id;
            let setting = DecisionsConfig {
                reward_wait_seconds: WAIT,
                default_reward: Some(0.5),
                ..DecisionsConfig::default()
            };
            let patch = ModelPatch {
                decisions: Some(Some(setting)),
                ..ModelPatch::default()
            };
            store
                .update_model(&u.id, &m, patch, NOW)
                .expect("decisions on");
            m
        })
        .collect();
    (u.id, models)
}

fn config() -> ModelConfig {
    let mut c = ModelConfig::new(3);
    c.seed = Some(5);
    c
}

/// Runs the child in `target.mode` and kills it: after [`KILL_AFTER`]
/// acknowledged rewards, or as soon as it says it is settling. Returns the
/// acknowledged `(model, decision)` pairs.
fn run_and_kill(target: &Target) -> HashSet<(String, String)> {
    let mut child = child::spawn("sigkill_child_entry", CHILD_ENV, target.encode());
    let stdout = child.stdout.take().expect("child stdout");
    let mut acked = HashSet::new();
    let mut killed = false;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read child output");
        if let Some(rest) = line.strip_prefix("ack ") {
            let (m, d) = rest.split_once(' ').expect("ack line");
            acked.insert((m.to_owned(), d.to_owned()));
        }
        let due = match target.mode.as_str() {
            "settle" => line.ends_with("settling"),
            _ => acked.len() >= KILL_AFTER,
        };
        if due && !killed {
            child.kill().expect("kill child");
            killed = true;
        }
    }
    child::reap(child, killed, &target.backend);
    acked
}

/// Every transition of `target`'s models applied exactly once: updates ==
/// applied decisions == the log's count, `applied_seq` 1..n, and the
/// applied decisions replayed in that order give the stored Q-table.
/// Returns the models' decisions (status by id).
fn check_once(store: &dyn Store, target: &Target) -> Vec<(String, DecisionStatus)> {
    let b = store.backend();
    let mut all = Vec::new();
    for model in &target.models {
        let info = store.model(&target.user, model).expect("model");
        let q = DecisionQuery {
            limit: u64::MAX,
            ..DecisionQuery::default()
        };
        let page = store.decisions(&target.user, model, &q).expect("decisions");
        let mut applied: Vec<_> = page
            .decisions
            .iter()
            .filter(|d| d.status == DecisionStatus::Applied)
            .collect();
        applied.sort_by_key(|d| d.applied_seq);
        let seqs: Vec<u64> = applied.iter().filter_map(|d| d.applied_seq).collect();
        let want: Vec<u64> = (1..=applied.len() as u64).collect();
        assert_eq!(seqs, want, "[{b}] applied_seq 1..n");
        assert_eq!(
            info.stats.updates,
            applied.len() as u64,
            "[{b}] each transition once"
        );
        assert_eq!(
            page.stats.applied,
            applied.len() as u64,
            "[{b}] the log's count"
        );
        let mut replay = Model::new(config()).unwrap();
        for d in &applied {
            let r = d
                .learned_reward
                .expect("an applied decision has its reward");
            let st = d.state.as_ref();
            replay
                .update(&Experience::new(st, d.action, r, st).done(true))
                .unwrap();
        }
        let stored = store.export_model(&target.user, model).expect("export");
        assert_eq!(stored.len(), replay.len(), "[{b}] states");
        for k in replay.table().keys() {
            assert_eq!(
                stored.table().row(k),
                replay.table().row(k),
                "[{b}] Q-values of {k:?}"
            );
        }
        all.extend(
            page.decisions
                .into_iter()
                .map(|d| (d.decision_id, d.status)),
        );
    }
    all
}

/// The whole scenario on one backend: rewards killed mid-way, then
/// deadlines settled and killed mid-way, each followed by a restart.
fn scenario(backend: &str, location: String) {
    let mut target = Target {
        mode: "reward".into(),
        backend: backend.into(),
        location,
        user: String::new(),
        models: Vec::new(),
    };
    {
        // Closed before the child starts (SQLite: one process per file).
        let s = target.open();
        (target.user, target.models) = setup(s.as_ref());
    }
    let acked = run_and_kill(&target);
    {
        let s = target.open();
        let statuses = check_once(s.as_ref(), &target);
        let applied: HashSet<&String> = statuses
            .iter()
            .filter(|(_, st)| *st == DecisionStatus::Applied)
            .map(|(id, _)| id)
            .collect();
        for (_, id) in &acked {
            assert!(
                applied.contains(id),
                "[{backend}] acknowledged reward of {id} not learned"
            );
        }
        // Open decisions whose deadlines pass, for the settling child.
        let m = meter(&target.user);
        for model in &target.models {
            for k in 0..OPEN_PER_MODEL {
                let d = Decide::new(StateRef::Int(5_000_000 + k % 40));
                s.decide(&m, model, &d).expect("decide");
            }
        }
    }
    target.mode = "settle".into();
    run_and_kill(&target);
    let s = target.open();
    let left = check_once(s.as_ref(), &target)
        .iter()
        .filter(|(_, st)| *st == DecisionStatus::Open)
        .count();
    eprintln!("[{backend}] killed while settling: {left} windows still open");
    // What the kill left open is settled now, each once.
    s.settle(NOW + WAIT as i64 + 1).expect("settle");
    let statuses = check_once(s.as_ref(), &target);
    let open = statuses
        .iter()
        .filter(|(_, st)| *st != DecisionStatus::Applied)
        .count();
    assert_eq!(
        open, 0,
        "[{backend}] every decision learned (default reward)"
    );
    eprintln!(
        "[{backend}] decisions sigkill: {} rewards acknowledged, {} decisions applied once",
        acked.len(),
        statuses.len()
    );
}

#[test]
fn sqlite_decisions_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("decisions.db");
    scenario("sqlite", path.to_string_lossy().into_owned());
}

#[test]
fn postgres_decisions_survive_sigkill() {
    let schema = format!("qlearn_decisions_sigkill_{}", std::process::id());
    let s = match PgStore::connect_with_schema(&pg_url(), &schema) {
        Ok(s) => s,
        Err(e) => {
            if std::env::var("QLEARN_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") {
                panic!("[postgres] not reachable at {}: {e}", pg_url());
            }
            let _ = writeln!(
                std::io::stderr().lock(),
                "SKIPPED: PostgreSQL not reachable at {} ({e})",
                pg_url()
            );
            return;
        }
    };
    struct DropSchema(PgStore);
    impl Drop for DropSchema {
        fn drop(&mut self) {
            let _ = self.0.drop_schema();
        }
    }
    let _cleanup = DropSchema(s);
    scenario("postgres", schema);
}
