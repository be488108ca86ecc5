//! Support code for the process-level fault suite, and integration tests
//! across crates and processes (in `tests/tests/`).
//!
//! [`linearizability`] records concurrent key-value histories and checks them
//! for linearizability.

pub mod linearizability;
