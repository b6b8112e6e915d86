//! The iSCSI target (tgtd): portals, login, sessions, connections, and the
//! management API tgtadm uses.
//!
//! - [`registry`]: targets, LUNs, ACLs, CHAP accounts and live sessions.
//! - [`conn`] (with `login` and `task`): one connection as a sans-IO state
//!   machine; PDUs in, PDUs and SCSI work out.
//! - [`driver`]: threads and sockets around it; the control socket.
//! - [`mgmt`]: tgtadm's requests, tgt's errors and `--op show` output.
//! - [`metrics`]: per-LUN command and byte counters (Prometheus text).

pub mod conn;
pub mod driver;
mod login;
pub mod metrics;
pub mod mgmt;
pub mod registry;
mod task;
pub mod throttle;

pub use conn::{Connection, OutPdu, Output, Payload};
pub use login::LoginStatus;
pub use registry::{Registry, Tid, Tsih};
pub use task::ScsiTask;

#[cfg(test)]
mod tests;
