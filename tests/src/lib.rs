//! Home of the cross-crate tests in `tests/`; no library code.
