//! Cluster membership, quorum, group messaging, cluster.conf and fencing.
