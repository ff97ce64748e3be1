//! The conformance suite on [`MemoryStore`].

mod conformance;

use qlearn_core::store::memory::MemoryStore;

/// Runs one check on a fresh store.
fn with_store(check: impl FnOnce(&MemoryStore)) {
    check(&MemoryStore::new());
}

conformance::conformance_tests!(with_store);
