//! Scenario tests named after the rules of the Raft paper they check.

mod raft_paper;
mod scenarios;
mod storage_failure;
