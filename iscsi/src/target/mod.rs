//! The iSCSI target: portals, login, sessions, connections, the tgtd management API.
