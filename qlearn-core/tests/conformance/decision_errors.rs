//! Conformance checks of a decision call whose learning the engine refuses
//! (listed in `conformance_tests!` with the rest of the suite).

use qlearn_core::decisions::{Decide, EpisodeEnd};
use qlearn_core::store::Store;
use qlearn_core::{Error, Experience, Model, ModelConfig, StateRef};

use super::decisions::{logging_model, reward, setting};
use super::{limits, meter, new_user, ok, NOW};

/// A model whose state 0 has Q-values of `-big` and state 1 of `big`
/// (`big` near `f64::MAX`, as only an import can set): learning the step
/// 0 → 1 would overflow, which the engine refuses.
fn near_overflow() -> Model {
    let mut c = ModelConfig::new(2);
    c.seed = Some(3);
    c.learning_rate = 1.0;
    c.discount_factor = 1.0;
    let big = f64::MAX * 0.75;
    let doc = serde_json::json!({
        "q_table": [
            { "state": 0, "q": [-big, -big] },
            { "state": 1, "q": [big, big] },
        ],
    });
    let mut json: serde_json::Value =
        serde_json::from_str(&Model::new(c).unwrap().to_json().unwrap()).unwrap();
    json["q_table"] = doc["q_table"].clone();
    Model::from_json(&json.to_string()).unwrap()
}

/// A reward whose transition the engine refuses (its learning would
/// overflow) fails that call with the engine's error, on every backend
/// (not a storage error), and changes no Q-value; the model's other calls
/// go on, and learn what they learn alone.
pub fn decision_overflow_fails_only_its_call<S: Store>(s: &S) {
    let a = new_user(s, "a@example.com");
    let mut local = near_overflow();
    let (s0, s1) = (StateRef::Int(0), StateRef::Int(1));
    assert!(
        local
            .clone()
            .update(&Experience::new(s0, 0, 0.0, s1))
            .is_err(),
        "the premise: the engine refuses this step"
    );
    let id = logging_model(s, &a.id, &local, setting(3600, None));
    let l = limits(None, None);
    let m = meter(&a.id, &l, NOW);
    let step = |st| ok(s, s.decide(&m, &id, &Decide::new(st).episode("e")));
    let (d0, d1) = (step(s0).decision.unwrap(), step(s1).decision.unwrap());
    local.predict_full(s0, true, None).unwrap();
    local.predict_full(s1, true, None).unwrap();
    let refused = s.reward(&m, &id, reward(&d0.decision_id, 0.0, None, true));
    assert!(
        matches!(&refused, Err(Error::InvalidField { field, .. }) if field == "reward"),
        "[{}] the engine's error: {refused:?}",
        s.backend()
    );
    assert_eq!(
        ok(s, s.export_model(&a.id, &id)).to_bytes().unwrap(),
        local.to_bytes().unwrap(),
        "[{}] no Q-value changed",
        s.backend()
    );
    // The episode's last step learns as it would alone (no overflow: its
    // target is the reward).
    ok(
        s,
        s.reward(&m, &id, reward(&d1.decision_id, 1.0, None, true)),
    );
    assert_eq!(
        ok(s, s.end_episode(&m, &id, "e", &EpisodeEnd::terminated())),
        1,
        "[{}] the last step learned",
        s.backend()
    );
    local
        .update(&Experience::new(s1, d1.action, 1.0, s1).done(true))
        .unwrap();
    assert_eq!(
        ok(s, s.export_model(&a.id, &id)).to_bytes().unwrap(),
        local.to_bytes().unwrap(),
        "[{}] the Q-table after the last step",
        s.backend()
    );
}
