//! The conformance suite on [`MemoryStore`].

mod conformance;

use qlearn_core::store::memory::MemoryStore;

macro_rules! suite {
    ($($name:ident),* $(,)?) => {$(
        #[test]
        fn $name() {
            conformance::$name(&MemoryStore::new());
        }
    )*};
}

suite!(
    settings,
    users,
    api_keys,
    models,
    predict_and_update,
    validation_costs_nothing,
    quota,
    tenant_isolation,
    concurrent_updates,
    concurrent_quota,
    concurrent_invalid_calls,
    concurrent_model_limit,
);
