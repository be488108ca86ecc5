//! QUIC peer transport with mutual TLS for the Raft stack. (Work in progress:
//! this crate is built after `raft-core`; it exports nothing yet.)
