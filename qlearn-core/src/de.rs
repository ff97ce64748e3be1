//! Serde helpers shared by the engine's types: reading strings so that a
//! corrupt length prefix in the binary format cannot make a decoder allocate
//! what it claims. Its own module so `state` and `config` both use it
//! without depending on each other.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};

/// Deserializes a string through `deserialize_str`, so that binary decoders
/// borrow it from the input instead of allocating whatever length a corrupt
/// length prefix claims.
pub(crate) fn de_box_str<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Box<str>, D::Error> {
    d.deserialize_str(BoxStrVisitor)
}

/// Visitor for [`de_box_str`] (and `action_names`): copies the borrowed or
/// transient string once its length is known to be real.
pub(crate) struct BoxStrVisitor;

impl Visitor<'_> for BoxStrVisitor {
    type Value = Box<str>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Box<str>, E> {
        Ok(v.into())
    }
}
