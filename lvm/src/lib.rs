//! LVM2 volumes in userspace: the on-disk format, the `lvm` commands,
//! activation without device-mapper, clustered locking through the dlm.
//!
//! Layers, from the bottom: [`ondisk`] (label, pv_header, mda_header, crc)
//! and [`config`] (the text syntax) are plain data; [`metadata`] is the VG
//! model; [`mda`] reads and writes the circular metadata area on a
//! [`device::Device`]; [`pv`] and [`store`] find PVs and VGs on the
//! scanned devices; [`commands`] are the lvm2 commands over them, with
//! [`lock`] (local or through clvmd) and [`activate`] (FUSE files mapped
//! by [`lvdev`]).
//!
//! Glossary (lvm2's words):
//! * **PV** physical volume: a device with an lvm2 label.
//! * **VG** volume group: PVs pooled into extents of `extent_size` sectors.
//! * **LV** logical volume: extents of a VG, mapped by segments.
//! * **PE/LE** physical/logical extent.
//! * **mda** metadata area: a header plus a circular buffer of text.
//! * **seqno** the metadata's version; each committed change adds one.
//! * **rlocn** `raw_locn`, where in the mda a copy of the text lies.

pub mod activate;
pub mod args;
pub mod clvmd;
pub mod commands;
pub mod conf;
pub mod config;
pub mod device;
pub mod lock;
pub mod lvdev;
pub mod mda;
pub mod metadata;
pub mod ondisk;
pub mod pv;
pub mod report;
pub mod store;
pub mod units;

pub use lvdev::LvDevice;
