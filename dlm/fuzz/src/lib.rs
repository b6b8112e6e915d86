//! The harness of the dlm fuzz targets (see `harness.rs`).
#[path = "harness.rs"]
pub mod harness;
pub use harness::*;
