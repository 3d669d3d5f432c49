//! Shturman's control plane.
//!
//! - [`store`]: the `Store` trait, its backends (sled by default, memory for
//!   tests) and the conformance suite every backend passes.
pub mod store;
