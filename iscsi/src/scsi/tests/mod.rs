//! Unit tests by SPC-4 / SBC-3 section, driving `ScsiTarget::execute` on
//! temporary file-backed LUNs (thick, and sparse thin ones).

mod harness;
mod pr;
mod robust;
mod sbc;
mod spc;
mod xcopy;
