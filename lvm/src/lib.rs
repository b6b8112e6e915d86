//! LVM2 volumes: on-disk format, commands, clustered locking.
