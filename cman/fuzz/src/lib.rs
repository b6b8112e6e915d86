//! The harness of the cman fuzz targets (see `harness.rs`).
#[path = "harness.rs"]
pub mod harness;
pub use harness::*;
