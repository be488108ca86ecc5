//! A linearizability checker for key-value histories.
//!
//! Clients of a fault-injection run record every request in a
//! [`HistoryRecorder`]: its invocation, then its answer or the fact that the
//! answer will never be known (timeout, lost connection, 504). The resulting
//! [`History`] is checked with [`check_history`] (or saved as JSON lines and
//! checked later with [`check_file`]).
//!
//! Each key is an independent register (absent, or holding a value; absent is
//! distinct from the empty value) supporting put, get, delete and
//! compare-and-swap, so the history is split by key and every key is checked
//! on its own with Wing & Gong's search and Lowe's memoization (see
//! [`checker`]). A key that is not linearizable is reported with a shrunk
//! failing sub-history and a rendering for humans; a key whose search exceeds
//! the configured limits is reported as unknown rather than guessed.
//!
//! An operation with an unknown outcome may take effect at any time after its
//! invocation, or never; a read with an unknown outcome is ignored. Written
//! values should be unique per key: the checker is sound without that, but
//! slower, and failures are harder to read.
//!
//! ```
//! use raft_tests::linearizability::{
//!     check_history, CheckConfig, HistoryRecorder, Input, Output, Verdict,
//! };
//!
//! let rec = HistoryRecorder::new();
//! let put = rec.invoke(1, "x", Input::Put { value: "a".into() });
//! let get = rec.invoke(2, "x", Input::Get);
//! rec.complete(put, Output::Put).unwrap();
//! rec.complete(get, Output::Get { value: None }).unwrap(); // concurrent: fine
//! let lost = rec.invoke(1, "x", Input::Put { value: "b".into() });
//! rec.complete_unknown(lost).unwrap();
//!
//! let report = check_history(&rec.history(), &CheckConfig::default()).unwrap();
//! assert_eq!(report.verdict(), Verdict::Linearizable, "{}", report.render());
//! ```

pub mod checker;
pub mod history;
pub mod model;
mod shrink;

#[cfg(test)]
mod tests;

pub use checker::{
    check_file, check_history, check_key, CheckConfig, Failure, KeyVerdict, Report, Verdict,
};
pub use history::{
    History, HistoryError, HistoryRecorder, Input, OpId, Operation, Output, RecordError, Value,
};
