//! The jobs, one module each: what a binary runs once its command line is read.
//! - `guard`: input → timely workers → guards → archive, alerts and replica.
//! - `archaeology`: patterns, sessions, entanglements and the field over the same inputs.
//! - `sync`: what two SQL replicas must exchange to agree, once or following their changes.
//! - `couchdb`: the CouchDB `_changes` listener.

pub mod archaeology;
pub mod couchdb;
pub mod engine;
pub mod guard;
pub mod sync;
