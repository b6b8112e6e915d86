//! HA services for the cluster: rgmanager.
//!
//! - [`config`]: the `<rm>` section of cluster.conf.
pub mod config;
