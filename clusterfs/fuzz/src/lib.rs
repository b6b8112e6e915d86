//! The harness of the clusterfs fuzz targets (see `harness.rs`).
#[path = "harness.rs"]
pub mod harness;
pub use harness::*;
