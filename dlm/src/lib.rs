//! An in-process distributed lock manager with the Linux kernel DLM's semantics.
