//! A GFS2-format journaled filesystem in userspace.
