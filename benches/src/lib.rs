//! Criterion benchmarks for the workspace live in `benches/`; this library is empty on purpose.
