//! A GFS2-format journaled filesystem in userspace.
//!
//! Layers, bottom up: [`ondisk`] (the format as data), [`block`] (the device
//! trait and its implementations), [`dirbuild`] (directory blocks as data),
//! [`mkfs`] (laying out a new volume), [`journal`] (the log), [`volume`]
//! (block cache, transactions, allocator), [`tree`] (file contents),
//! [`dir`] (directories), [`fs`] (the operations a mount calls), [`lock`]
//! (glock points).
//!
//! # Glossary
//! * **dinode**: the on-disk inode, one block; small files and directories
//!   are *stuffed* (their data follows the 232-byte header).
//! * **rgrp** (resource group): a run of blocks with a header and a bitmap
//!   of two bits per block (free, used, unlinked, dinode).
//! * **rindex**: the system file listing every rgrp.
//! * **exhash**: the extendible-hash directory format (hash table + leaves).
//! * **jid**: journal id, one journal per node that mounts the volume.
//! * **glock**: a cluster lock on an inode, rgrp or journal.
//! * **master directory**: the hidden tree of system files (`jindex`,
//!   `per_node`, `inum`, `statfs`, `rindex`, `quota`).

pub mod acl;
pub mod block;
pub mod block_iscsi;
pub mod cluster;
pub mod dir;
pub mod dirbuild;
pub mod falloc;
pub mod fs;
pub mod fuse;
pub mod glock;
pub mod journal;
pub mod lock;
pub mod lock_dlm;
pub mod mkfs;
pub mod ondisk;
pub mod replay;
pub mod tree;
pub mod volume;
pub mod xattr;
pub mod xattr_ed;
