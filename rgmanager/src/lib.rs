//! HA services for the cluster: rgmanager.
