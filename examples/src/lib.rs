//! Example-only crate: see `examples/`.
