//! The harness of the iscsi fuzz targets (see `harness.rs`).
#[path = "harness.rs"]
pub mod harness;
pub use harness::*;
