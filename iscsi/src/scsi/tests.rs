//! Unit tests by SPC-4 / SBC-3 section, driving `ScsiTarget::execute`.
