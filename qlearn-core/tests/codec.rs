//! Property tests of the model formats: a reloaded model (binary or JSON)
//! continues exactly as the original; decoding arbitrary, mutated or
//! truncated input never panics and is always `Error::Decode`; a forged
//! length prefix cannot make the decoder allocate what the input does not
//! hold.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use qlearn_core::codec::{FORMAT_VERSION, MAGIC};
use qlearn_core::{Algorithm, Error, Experience, Exploration, Model, ModelConfig, State};

// ---- a global allocator that records the largest allocation of a thread ----

struct Tracking;

static LARGEST: AtomicUsize = AtomicUsize::new(0);
thread_local! {
    static TRACK: Cell<bool> = const { Cell::new(false) };
}

fn note(size: usize) {
    if TRACK.with(Cell::get) {
        LARGEST.fetch_max(size, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to the system allocator unchanged (it only
// records sizes first), so it upholds GlobalAlloc exactly as System does.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller upholds GlobalAlloc's contract; passed on as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller upholds GlobalAlloc's contract; passed on as is.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: the caller upholds GlobalAlloc's contract; passed on as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller upholds GlobalAlloc's contract; passed on as is.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Tracking = Tracking;

/// The largest single allocation `f` makes on this thread.
fn largest_allocation<R>(f: impl FnOnce() -> R) -> (R, usize) {
    LARGEST.store(0, Ordering::Relaxed);
    TRACK.with(|t| t.set(true));
    let r = f();
    TRACK.with(|t| t.set(false));
    (r, LARGEST.load(Ordering::Relaxed))
}

// ---- strategies ---------------------------------------------------------------

fn any_config() -> impl Strategy<Value = ModelConfig> {
    (
        1usize..6,
        prop_oneof![
            Just(Algorithm::QLearning),
            Just(Algorithm::Sarsa),
            Just(Algorithm::ExpectedSarsa),
            Just(Algorithm::DoubleQLearning),
        ],
        prop_oneof![Just(Exploration::EpsilonGreedy), Just(Exploration::Softmax)],
        (0.01f64..=1.0, 0.0f64..=1.0, 0.0f64..=1.0, 0.5f64..=1.0),
        (
            -2.0f64..2.0,
            0.05f64..5.0,
            any::<Option<u64>>(),
            any::<bool>(),
        ),
    )
        .prop_map(
            |(n, algorithm, exploration, (lr, gamma, eps, decay), (init, temp, seed, named))| {
                let mut c = ModelConfig::new(n);
                c.algorithm = algorithm;
                c.exploration = exploration;
                c.learning_rate = lr;
                c.discount_factor = gamma;
                c.epsilon = eps;
                c.epsilon_decay = decay;
                c.min_epsilon = 0.01;
                c.initial_q = init;
                c.temperature = temp;
                c.seed = seed;
                if named {
                    c.action_names = Some((0..n).map(|a| format!("act-{a}")).collect());
                }
                c
            },
        )
}

/// A pool of states of every kind (including arrays that need
/// canonicalising and long strings with non-ASCII characters).
fn state(i: u8) -> State {
    match i % 6 {
        0 => State::Int(i as i64 - 7),
        1 => State::Str(format!("s{i}")),
        2 => State::Str(format!("état-{i}-ünïcödé")),
        3 => State::Array(vec![i as f64, -0.0]),
        4 => State::Array(vec![0.1 * i as f64, 1e-300, -12345.678]),
        _ => State::Int(i64::MAX - i as i64),
    }
}

#[derive(Clone, Debug)]
struct Op {
    state: u8,
    next: u8,
    reward: f64,
    done: bool,
    truncated: bool,
    explore: bool,
    masked: bool,
    next_action: usize,
}

fn any_ops(max: usize) -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        (
            0u8..24,
            0u8..24,
            -10.0f64..10.0,
            prop::bool::weighted(0.1),
            prop::bool::weighted(0.05),
            any::<bool>(),
            prop::bool::weighted(0.2),
            0usize..64,
        )
            .prop_map(
                |(state, next, reward, done, truncated, explore, masked, next_action)| Op {
                    state,
                    next,
                    reward,
                    done,
                    truncated,
                    explore,
                    masked,
                    next_action,
                },
            ),
        0..max,
    )
}

/// Applies `ops` and records every observable result (decisions, Q-values,
/// outcomes); bit-exact, via `{:?}` of f64s.
fn run(m: &mut Model, ops: &[Op]) -> Vec<String> {
    let n = m.config().n_actions;
    let mask: Vec<usize> = (0..n).step_by(2).collect();
    let mut out = Vec::with_capacity(ops.len());
    for op in ops {
        let (s, next) = (state(op.state), state(op.next));
        let allowed = op.masked.then_some(&mask[..]);
        let p = m.predict_full(&s, op.explore, allowed).unwrap();
        let mut exp = Experience::new(&s, p.action, op.reward, &next);
        exp.done = op.done;
        exp.truncated = op.truncated;
        exp.next_action = Some(mask[op.next_action % mask.len()]);
        if op.masked {
            exp.next_allowed_actions = Some(&mask);
        }
        let u = m.update(&exp).unwrap();
        out.push(format!("{p:?} {u:?}"));
    }
    out.push(format!("{:?}", m.stats()));
    out
}

fn trained(config: ModelConfig, ops: &[Op]) -> Model {
    let mut m = Model::new(config).unwrap();
    run(&mut m, ops);
    m
}

fn is_decode<T>(r: &Result<T, Error>) -> bool {
    matches!(r, Err(Error::Decode(_)))
}

fn ok_or_decode(r: &Result<Model, Error>) -> bool {
    r.is_ok() || is_decode(r)
}

/// Frames a model's `payload` as the binary format would (version 1: a
/// model alone; correct length and CRC).
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

const HEADER: usize = 20;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_reloaded_model_continues_exactly(
        config in any_config(),
        before in any_ops(120),
        after in any_ops(120),
    ) {
        let mut original = trained(config, &before);
        let bytes = original.to_bytes().unwrap();
        let mut from_bytes = Model::from_bytes(&bytes).unwrap();
        let mut from_json = Model::from_json(&original.to_json().unwrap()).unwrap();
        prop_assert_eq!(&from_bytes.to_bytes().unwrap(), &bytes);
        prop_assert_eq!(&from_json.to_bytes().unwrap(), &bytes);
        prop_assert_eq!(from_bytes.config(), original.config());
        prop_assert_eq!(from_json.stats(), original.stats());

        let expected = run(&mut original, &after);
        prop_assert_eq!(&run(&mut from_bytes, &after), &expected);
        prop_assert_eq!(&run(&mut from_json, &after), &expected);
        let end = original.to_bytes().unwrap();
        prop_assert_eq!(from_bytes.to_bytes().unwrap(), end.clone());
        prop_assert_eq!(from_json.to_bytes().unwrap(), end);
    }

    #[test]
    fn arbitrary_bytes_are_a_decode_error(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        prop_assert!(is_decode(&Model::from_bytes(&bytes)));
        let mut with_magic = MAGIC.to_vec();
        with_magic.extend_from_slice(&bytes);
        prop_assert!(is_decode(&Model::from_bytes(&with_magic)));
    }

    #[test]
    fn arbitrary_framed_payloads_never_panic(payload in prop::collection::vec(any::<u8>(), 0..1024)) {
        prop_assert!(ok_or_decode(&Model::from_bytes(&frame(&payload))));
    }

    #[test]
    fn any_single_byte_change_is_a_decode_error(
        config in any_config(),
        ops in any_ops(30),
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let mut bytes = trained(config, &ops).to_bytes().unwrap();
        let i = at.index(bytes.len());
        bytes[i] ^= flip;
        prop_assert!(is_decode(&Model::from_bytes(&bytes)), "byte {} ^ {}", i, flip);
    }

    #[test]
    fn truncated_or_padded_encodings_are_a_decode_error(
        config in any_config(),
        ops in any_ops(30),
        at in any::<prop::sample::Index>(),
        extra in prop::collection::vec(any::<u8>(), 1..16),
    ) {
        let bytes = trained(config, &ops).to_bytes().unwrap();
        let cut = at.index(bytes.len());
        prop_assert!(is_decode(&Model::from_bytes(&bytes[..cut])));
        let mut padded = bytes.clone();
        padded.extend_from_slice(&extra);
        prop_assert!(is_decode(&Model::from_bytes(&padded)));
    }

    /// Past the checksum: corrupt the payload itself, re-frame it with a
    /// valid CRC, and the bincode decoder and the validation behind it must
    /// still either refuse it as `Decode` or yield a model that works.
    #[test]
    fn corrupted_payloads_with_valid_checksums_never_panic(
        config in any_config(),
        ops in any_ops(30),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
        more in any_ops(10),
    ) {
        let bytes = trained(config, &ops).to_bytes().unwrap();
        let mut payload = bytes[HEADER..].to_vec();
        for (at, value) in &edits {
            let i = at.index(payload.len());
            payload[i] = *value;
        }
        if truncate {
            payload.truncate(cut.index(payload.len()));
        }
        let decoded = Model::from_bytes(&frame(&payload));
        prop_assert!(ok_or_decode(&decoded));
        if let Ok(mut m) = decoded {
            // A model that decodes is a valid model: it predicts, learns and
            // saves without panicking.
            for op in &more {
                let s = state(op.state);
                let a = m.predict(&s, op.explore, None).unwrap().action;
                let next = state(op.next);
                let exp = Experience::new(&s, a, op.reward, &next).next_action(0);
                let _ = m.update(&exp);
            }
            prop_assert!(Model::from_bytes(&m.to_bytes().unwrap()).is_ok());
        }
    }

    #[test]
    fn arbitrary_or_mutated_json_is_a_decode_error_or_a_model(
        text in ".{0,200}",
        config in any_config(),
        ops in any_ops(10),
        at in any::<prop::sample::Index>(),
        replacement in prop::sample::select(vec!['0', '9', '-', '"', ',', '[', '}', 'e', 'x', ' ']),
    ) {
        prop_assert!(is_decode(&Model::from_json(&text)));
        let json = trained(config, &ops).to_json().unwrap();
        let mut chars: Vec<char> = json.chars().collect();
        let i = at.index(chars.len());
        chars[i] = replacement;
        let mutated: String = chars.into_iter().collect();
        prop_assert!(ok_or_decode(&Model::from_json(&mutated)));
    }
}

// ---- targeted cases --------------------------------------------------------------

/// Sets the little-endian u64 length prefix just before `marker` in the
/// payload of `bytes` to `len`, and re-frames.
fn forge_length(bytes: &[u8], marker: &[u8], len: u64) -> Vec<u8> {
    let mut payload = bytes[HEADER..].to_vec();
    let at = payload
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("marker in payload");
    assert_eq!(
        &payload[at - 8..at],
        &(marker.len() as u64).to_le_bytes(),
        "the 8 bytes before a string are its length"
    );
    payload[at - 8..at].copy_from_slice(&len.to_le_bytes());
    frame(&payload)
}

#[test]
fn a_forged_string_length_does_not_allocate_it() {
    let mut c = ModelConfig::new(2);
    c.action_names = Some(vec!["NAME-MARKER".into(), "b".into()]);
    let mut m = Model::new(c).unwrap();
    m.update(&Experience::new("STATE-MARKER", 0, 1.0, "x"))
        .unwrap();
    let bytes = m.to_bytes().unwrap();
    for marker in [&b"STATE-MARKER"[..], &b"NAME-MARKER"[..]] {
        // Within the decoder's 4 GiB limit, far beyond the input.
        let forged = forge_length(&bytes, marker, 0xFFFF_0000);
        let (r, largest) = largest_allocation(|| Model::from_bytes(&forged));
        assert!(is_decode(&r), "{r:?}");
        assert!(
            largest < 1 << 20,
            "decoding {} bytes allocated {largest} bytes at once",
            forged.len()
        );
    }
}

#[test]
fn header_errors_say_what_is_wrong() {
    let bytes = Model::new(ModelConfig::new(3)).unwrap().to_bytes().unwrap();
    assert_eq!(&bytes[..4], b"QLRN");
    let msg = |b: &[u8]| match Model::from_bytes(b) {
        Err(Error::Decode(m)) => m,
        other => panic!("expected Decode, got {other:?}"),
    };
    let mut future = bytes.clone();
    future[4..6].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    assert!(msg(&future).contains("version"), "{}", msg(&future));
    assert!(msg(&bytes[..10]).contains("header"));
    assert!(msg(b"PK\x03\x04 not a model at all").contains("magic"));
    let mut corrupt = bytes.clone();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 1;
    assert!(msg(&corrupt).contains("checksum"));
    assert!(msg(&bytes[..bytes.len() - 1]).contains("truncated"));
}

#[test]
fn json_rows_must_have_the_configured_width() {
    let mut m = Model::new(ModelConfig::new(2)).unwrap();
    m.update(&Experience::new(1i64, 0, 1.0, 2i64)).unwrap();
    m.update(&Experience::new(2i64, 0, 1.0, 3i64)).unwrap();
    let mut doc: serde_json::Value = serde_json::from_str(&m.to_json().unwrap()).unwrap();
    // Same total number of values, wrong split: [3 values], [1 value].
    doc["q_table"][0]["q"] = serde_json::json!([0.1, 0.0, 7.0]);
    doc["q_table"][1]["q"] = serde_json::json!([0.1]);
    let r = Model::from_json(&doc.to_string());
    assert!(is_decode(&r), "{r:?}");
    // Duplicate states after canonicalisation ([1] and [1.0]) are refused.
    doc["q_table"] = serde_json::json!([
        {"state": [1], "q": [0.0, 0.0]},
        {"state": [1.0], "q": [0.0, 0.0]}
    ]);
    assert!(is_decode(&Model::from_json(&doc.to_string())));
}

#[test]
fn json_export_shows_states_as_sent() {
    let mut m = Model::new(ModelConfig::new(2)).unwrap();
    for s in [
        State::Int(3),
        State::Str("s1".into()),
        State::Array(vec![1.0, 2.5]),
    ] {
        m.update(&Experience::new(&s, 1, 1.0, &s)).unwrap();
    }
    let doc: serde_json::Value = serde_json::from_str(&m.to_json().unwrap()).unwrap();
    let states: Vec<String> = doc["q_table"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["state"].to_string())
        .collect();
    assert_eq!(states, vec!["3", "\"s1\"", "[1,2.5]"]);
    assert_eq!(doc["format"], "qlearn-model");
}

/// A model written by an earlier build (`tests/fixtures/model-v1.qlrn`, with
/// its JSON export): integer, short and long string, and 1-, 2- and 4-number
/// array states. Today's build must read it and write the very same bytes,
/// whatever the Q-table's in-memory layout is.
#[test]
fn a_saved_v1_model_reads_back_and_re_encodes_to_the_same_bytes() {
    let bytes = include_bytes!("fixtures/model-v1.qlrn");
    let json = include_str!("fixtures/model-v1.json");
    let m = Model::from_bytes(bytes).unwrap();
    assert_eq!(m.len(), 13);
    assert_eq!(m.to_bytes().unwrap(), bytes.to_vec());
    assert_eq!(m.to_json().unwrap(), json);
    let from_json = Model::from_json(json).unwrap();
    assert_eq!(from_json.to_bytes().unwrap(), bytes.to_vec());
    let long = "a-long-state-name-of-27-b\u{e9}";
    for s in [
        State::Int(-7),
        State::Int(i64::MAX),
        State::Int(0),
        State::Str(String::new()),
        State::Str("cell-0001234".into()),
        State::Str("fourteen-bytes".into()),
        State::Str("fifteen-bytes!!".into()),
        State::Str(long.into()),
        State::Array(vec![1.5]),
        State::Array(vec![0.0, 2.0]),
        State::Array(vec![1.0, 2.0, 3.0, -4.25]),
        State::Array(vec![0.0]),
    ] {
        assert!(m.table().position(s.as_ref()).is_some(), "{s:?} is stored");
    }
    assert!(m.table().position(State::Int(1).as_ref()).is_none());
    assert!(m
        .table()
        .position(State::Array(vec![0.0, 0.0]).as_ref())
        .is_none());
}
