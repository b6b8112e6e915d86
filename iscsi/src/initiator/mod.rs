//! The iSCSI initiator: discovery, login, command queueing, reconnect; a LUN as a block device.
