//! Pattern archaeology: what keeps recurring, who moves together, which sessions happened —
//! maintained as events arrive, and the same after a backfill of the same history.

mod carry;
pub mod entanglements;
pub mod field;
pub mod motifs;
mod periodic;
pub mod sequences;
pub mod sessions;
