//! A baseline action recorded with a decision (the action the customer's
//! existing rule would have taken), for offline evaluation's `baseline`
//! policy: checked like an action, part of a retry's identity, kept in the
//! log's JSON (omitted when absent, so older logs load) and in the binary
//! format, and read by the evaluation.

use qlearn_core::codec::{decision_log_from_json, decode_with_decisions, encode_with_decisions};
use qlearn_core::decisions::{Decide, DecisionLog, DecisionsConfig};
use qlearn_core::evaluation::{steps_from_log, LoggedStep};
use qlearn_core::{Error, Model, ModelConfig};

fn model() -> Model {
    let mut c = ModelConfig::new(3);
    c.seed = Some(4);
    Model::new(c).unwrap()
}

fn log() -> DecisionLog {
    DecisionLog::new(DecisionsConfig::default()).unwrap()
}

#[test]
fn a_baseline_is_an_action_of_the_model() {
    let (mut m, mut log) = (model(), log());
    let r = log.decide(&mut m, &Decide::new(1).baseline(3), 0);
    assert!(
        matches!(&r, Err(Error::InvalidField { field, .. }) if field == "baseline_action"),
        "{r:?}"
    );
    assert_eq!(log.stats().decisions, 0, "nothing logged");
    let d = log.decide(&mut m, &Decide::new(1).baseline(2), 0).unwrap();
    assert_eq!(log.get(&d.decision_id).unwrap().baseline_action, Some(2));
    let none = log.decide(&mut m, &Decide::new(1), 0).unwrap();
    assert_eq!(log.get(&none.decision_id).unwrap().baseline_action, None);
}

#[test]
fn a_retry_names_the_same_baseline() {
    let (mut m, mut log) = (model(), log());
    let first = log
        .decide(&mut m, &Decide::new(1).id("x").baseline(1), 0)
        .unwrap();
    let again = log
        .decide(&mut m, &Decide::new(1).id("x").baseline(1), 5)
        .unwrap();
    assert!(again.replayed && again.action == first.action);
    for other in [Decide::new(1).id("x").baseline(0), Decide::new(1).id("x")] {
        let r = log.decide(&mut m, &other, 5);
        assert!(matches!(r, Err(Error::Conflict(_))), "{other:?}: {r:?}");
    }
    let plain = log.decide(&mut m, &Decide::new(1).id("y"), 0).unwrap();
    let r = log.decide(&mut m, &Decide::new(1).id("y").baseline(1), 5);
    assert!(matches!(r, Err(Error::Conflict(_))), "{r:?}");
    assert!(
        log.decide(&mut m, &Decide::new(1).id("y"), 5)
            .unwrap()
            .replayed
    );
    assert_eq!(log.get(&plain.decision_id).unwrap().baseline_action, None);
    assert_eq!(log.stats().decisions, 2);
}

/// A log of decision "with" (baseline 2) and "without" (none).
fn with_and_without() -> (Model, DecisionLog) {
    let (mut m, mut log) = (model(), log());
    log.decide(&mut m, &Decide::new(1).id("with").baseline(2), 0)
        .unwrap();
    log.decide(&mut m, &Decide::new(2).id("without"), 0)
        .unwrap();
    (m, log)
}

#[test]
fn the_log_keeps_it_and_older_logs_load() {
    let (m, log) = with_and_without();
    let json = serde_json::to_value(&log).unwrap();
    let decisions = &json["decisions"];
    assert_eq!(decisions["with"]["baseline_action"], 2);
    assert!(
        decisions["without"].get("baseline_action").is_none(),
        "omitted when absent: {}",
        decisions["without"]
    );
    // A log written before the field (none of its decisions has it).
    let mut old = json.clone();
    old["decisions"]["with"]
        .as_object_mut()
        .unwrap()
        .remove("baseline_action");
    let back = decision_log_from_json(&m, &old.to_string()).unwrap();
    assert_eq!(back.get("with").unwrap().baseline_action, None);
    // The binary format (version 2) carries it.
    let bytes = encode_with_decisions(&m, Some(&log)).unwrap();
    let (_, back) = decode_with_decisions(&bytes).unwrap();
    assert_eq!(back.as_ref(), Some(&log));
    // One out of the model's range does not load.
    let mut bad = json;
    bad["decisions"]["with"]["baseline_action"] = 3.into();
    let r = decision_log_from_json(&m, &bad.to_string());
    assert!(matches!(r, Err(Error::Decode(_))), "{r:?}");
}

#[test]
fn the_evaluation_reads_it() {
    let (_, log) = with_and_without();
    let mut steps: Vec<(String, Option<usize>)> = steps_from_log(&log)
        .unwrap()
        .into_iter()
        .map(|s| (s.decision_id, s.baseline_action))
        .collect();
    steps.sort();
    assert_eq!(
        steps,
        [("with".to_owned(), Some(2)), ("without".to_owned(), None)]
    );
    let step = LoggedStep::from_record(log.get("with").unwrap()).unwrap();
    assert_eq!(step.baseline_action, Some(2));
}
