//! The Raft consensus algorithm as a pure, deterministic state machine.
//! (Work in progress: being written; it exports nothing yet.)
