//! Payload encryption, shared with vigil-sql's `decrypt`: see [`vigil_operators::crypto`].

pub use vigil_operators::crypto::*;
