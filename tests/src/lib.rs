//! Integration tests across crates and processes live in `tests/tests/`.
