//! The conformance tests that turn strict f32 on for the whole process (docs/numerics.md, "Strict
//! f32"), as their own test binary so that the mode never reaches the suite's other tests (it changes
//! which product the cubecl backends run): `cargo test --release --test strict batching::`.

mod batching;
mod strict_f32;
