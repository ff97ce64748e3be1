//! The binary format with a decision log (version 2): a model saved with
//! pending decisions, open episodes and its decisions setting continues
//! exactly as if it had never stopped; a model without a log is still
//! written as version 1 (the fixture an earlier build wrote reads back);
//! a damaged or mismatched log is `Error::Decode`, never a panic.

use qlearn_core::codec::{decode_with_decisions, encode_with_decisions, FORMAT_VERSION, MAGIC};
use qlearn_core::decisions::{Aggregation, Decide, DecisionLog, DecisionsConfig, EpisodeEnd};
use qlearn_core::{Error, Model, ModelConfig};

fn model() -> Model {
    let mut c = ModelConfig::new(3);
    c.seed = Some(21);
    c.epsilon = 0.3;
    c.learning_rate = 0.5;
    Model::new(c).unwrap()
}

fn setting() -> DecisionsConfig {
    DecisionsConfig {
        reward_wait_seconds: 60,
        default_reward: Some(-0.25),
        aggregation: Aggregation::Mean,
        retention_days: 3,
    }
}

/// A model and log in the middle of things: learned steps, an open
/// episode waiting for its next decision, rewards counted on open
/// windows, a one-step decision with no reward yet.
fn midway() -> (Model, DecisionLog) {
    let mut m = model();
    let mut log = DecisionLog::new(setting()).unwrap();
    for k in 0..4i64 {
        let d = log
            .decide(&mut m, &Decide::new(k).episode("e1"), k * 1000)
            .unwrap();
        log.reward(&mut m, &d.decision_id, k as f64, None, k < 2, k * 1000 + 1)
            .unwrap();
    }
    let lone = log
        .decide(
            &mut m,
            &Decide::new("lone").allowed(&[0, 2]).id("lone-1"),
            5000,
        )
        .unwrap();
    log.reward(&mut m, &lone.decision_id, 2.0, Some("r1"), false, 5001)
        .unwrap();
    (m, log)
}

/// What the rest of the story does to a model and log.
fn finish(m: &mut Model, log: &mut DecisionLog) -> String {
    let d = log.decide(m, &Decide::new(9).episode("e1"), 6000).unwrap();
    log.reward(m, &d.decision_id, 1.5, None, true, 6001)
        .unwrap();
    log.end_episode(m, "e1", EpisodeEnd::terminated()).unwrap();
    // The repeated reward id is still known; then the deadlines pass.
    let dup = log
        .reward(m, "lone-1", 2.0, Some("r1"), false, 6002)
        .unwrap();
    let settled = log.settle(m, 120_000).unwrap();
    format!(
        "{dup:?} {settled} {:?} {:?} {:?}",
        log.stats(),
        m.to_bytes().unwrap(),
        log.get("lone-1")
    )
}

#[test]
fn pending_decisions_survive_the_binary_format() {
    let (mut m, mut log) = midway();
    let bytes = encode_with_decisions(&m, Some(&log)).unwrap();
    assert_eq!(&bytes[..4], MAGIC);
    assert_eq!(u16::from_le_bytes([bytes[4], bytes[5]]), FORMAT_VERSION);
    assert_eq!(FORMAT_VERSION, 2);
    let (mut m2, log2) = decode_with_decisions(&bytes).unwrap();
    let mut log2 = log2.expect("the log came back");
    assert_eq!(log2, log);
    assert_eq!(log2.config(), &setting());
    // The same model and log give the same bytes (hash maps or not).
    assert_eq!(encode_with_decisions(&m2, Some(&log2)).unwrap(), bytes);
    assert_eq!(m2.to_bytes().unwrap(), m.to_bytes().unwrap());
    // Both continue the same way, bit for bit.
    assert_eq!(finish(&mut m2, &mut log2), finish(&mut m, &mut log));
    // Model::from_bytes reads version 2 as the model alone.
    assert_eq!(
        Model::from_bytes(&bytes).unwrap().to_bytes().unwrap(),
        midway().0.to_bytes().unwrap()
    );
}

#[test]
fn a_model_without_a_log_is_still_version_1() {
    let (m, _) = midway();
    let plain = encode_with_decisions(&m, None).unwrap();
    assert_eq!(plain, m.to_bytes().unwrap());
    assert_eq!(u16::from_le_bytes([plain[4], plain[5]]), 1);
    let (back, log) = decode_with_decisions(&plain).unwrap();
    assert!(log.is_none());
    assert_eq!(back.to_bytes().unwrap(), plain);
    // The file an earlier build wrote (the format-1 fixture) still loads.
    let old = include_bytes!("fixtures/model-v1.qlrn");
    let (m1, log) = decode_with_decisions(old).unwrap();
    assert!(log.is_none());
    assert_eq!(m1.len(), 13);
    assert_eq!(m1.to_bytes().unwrap(), old.to_vec());
}

/// Re-frames a version-2 `payload` (correct length and CRC).
fn frame_v2(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// A version-2 file whose log JSON is `edit`ed (framed correctly).
fn with_log_text(edit: impl Fn(String) -> String) -> Vec<u8> {
    let (m, _) = midway();
    let model_payload = m.to_bytes().unwrap()[20..].to_vec();
    let (_, log) = midway();
    let text = edit(serde_json::to_string(&log).unwrap());
    let mut payload = model_payload;
    payload.extend_from_slice(&(text.len() as u64).to_le_bytes());
    payload.extend_from_slice(text.as_bytes());
    frame_v2(&payload)
}

#[test]
fn a_damaged_log_is_a_decode_error() {
    let decode = |b: &[u8]| match decode_with_decisions(b) {
        Err(Error::Decode(m)) => m,
        other => panic!("expected Decode, got {:?}", other.map(|(_, l)| l.is_some())),
    };
    // The untouched text reads (the framing here is the format's).
    assert!(decode_with_decisions(&with_log_text(|t| t)).is_ok());
    // An action the model does not have; a state the model refuses; a
    // setting out of range; not JSON; nothing after the model; bytes after
    // the log.
    let bad_action = with_log_text(|t| t.replacen("\"action\":", "\"action\":7", 1));
    assert!(
        decode(&bad_action).contains("log"),
        "{}",
        decode(&bad_action)
    );
    let bad_state = with_log_text(|t| t.replacen("\"state\":\"lone\"", "\"state\":[]", 1));
    assert!(
        decode(&bad_state).contains("lone-1"),
        "{}",
        decode(&bad_state)
    );
    let bad_setting = with_log_text(|t| t.replace("\"retention_days\":3", "\"retention_days\":0"));
    assert!(decode(&bad_setting).contains("retention_days"));
    assert!(decode(&with_log_text(|_| "{not json".into())).contains("log"));
    let (m, log) = midway();
    let good = encode_with_decisions(&m, Some(&log)).unwrap();
    let model_only = m.to_bytes().unwrap();
    assert!(decode(&frame_v2(&model_only[20..])).contains("log"));
    let mut long = good[20..].to_vec();
    long.push(0);
    assert!(decode(&frame_v2(&long)).contains("trailing"));
    // Every truncation of the payload is refused cleanly.
    for cut in (20..good.len()).step_by(97) {
        let r = decode_with_decisions(&frame_v2(&good[20..cut]));
        assert!(matches!(r, Err(Error::Decode(_))), "cut at {cut}");
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]

    /// Anything after a valid model in a version-2 file (random bytes, or
    /// the real log with bytes flipped, framed with a correct checksum)
    /// decodes to a model and log or is `Error::Decode`; never a panic.
    #[test]
    fn arbitrary_logs_never_panic(
        tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
        flips in proptest::collection::vec((proptest::prelude::any::<usize>(), 1u8..=255), 0..4),
    ) {
        let (m, log) = midway();
        let model_payload = m.to_bytes().unwrap()[20..].to_vec();
        let mut random = model_payload.clone();
        random.extend_from_slice(&tail);
        let r = decode_with_decisions(&frame_v2(&random));
        proptest::prop_assert!(r.is_ok() || matches!(r, Err(Error::Decode(_))));
        let mut real = encode_with_decisions(&m, Some(&log)).unwrap()[20..].to_vec();
        let log_start = model_payload.len();
        for (at, x) in flips {
            let i = log_start + at % (real.len() - log_start);
            real[i] ^= x;
        }
        let r = decode_with_decisions(&frame_v2(&real));
        proptest::prop_assert!(r.is_ok() || matches!(r, Err(Error::Decode(_))));
    }
}
