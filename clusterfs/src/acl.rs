//! POSIX ACLs, stored as GFS2 stores them: the `system.posix_acl_access`
//! and `system.posix_acl_default` extended attributes in the kernel's
//! xattr form (little-endian: a version word 2, then 8-byte entries of
//! tag, permissions and id).
//!
//! The kernel enforces them (the FUSE mount asks for `FUSE_POSIX_ACL`,
//! which implies `default_permissions`); the filesystem keeps them in step
//! with the mode as the kernel's `posix_acl.c` does: a new inode inherits
//! its directory's default ACL (`posix_acl_create`, the requested mode
//! masked by it, umask ignored), chmod rewrites the owner, mask (or group)
//! and other entries (`posix_acl_chmod`), and setting an access ACL sets
//! the mode, dropping the attribute when the ACL says no more than the
//! mode does (`posix_acl_update_mode`).

use crate::ondisk::Dinode;
use crate::volume::{FsError, Result, Volume};
use crate::xattr::SetMode;

/// The access ACL's attribute name.
pub const ACCESS: &[u8] = b"system.posix_acl_access";
/// The default ACL's attribute name.
pub const DEFAULT: &[u8] = b"system.posix_acl_default";

const VERSION: u32 = 2;

/// ACL entry tags (`ACL_USER_OBJ` ...).
pub mod tag {
    /// The owner.
    pub const USER_OBJ: u16 = 0x01;
    /// A named user.
    pub const USER: u16 = 0x02;
    /// The owning group.
    pub const GROUP_OBJ: u16 = 0x04;
    /// A named group.
    pub const GROUP: u16 = 0x08;
    /// The mask.
    pub const MASK: u16 = 0x10;
    /// Everyone else.
    pub const OTHER: u16 = 0x20;
}

/// Errors of ACL decoding.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AclError {
    /// Wrong size or version word.
    #[error("malformed ACL attribute")]
    Malformed,
    /// Entries out of order, missing, duplicated or with bad permissions.
    #[error("invalid ACL")]
    Invalid,
}

impl From<AclError> for FsError {
    fn from(_: AclError) -> Self {
        FsError::Invalid("ACL")
    }
}

/// One entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AclEntry {
    /// [`tag`].
    pub tag: u16,
    /// rwx bits.
    pub perm: u16,
    /// uid or gid for USER/GROUP entries.
    pub id: u32,
}

/// A POSIX ACL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acl(pub Vec<AclEntry>);

const UNDEFINED_ID: u32 = u32::MAX;

impl Acl {
    /// Decodes the xattr form and checks it like `posix_acl_valid`.
    pub fn decode(b: &[u8]) -> std::result::Result<Self, AclError> {
        if b.len() <= 4 || !(b.len() - 4).is_multiple_of(8) {
            return Err(AclError::Malformed);
        }
        let le16 = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let le32 = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        if le32(0) != VERSION {
            return Err(AclError::Malformed);
        }
        let acl = Acl((4..b.len())
            .step_by(8)
            .map(|o| AclEntry {
                tag: le16(o),
                perm: le16(o + 2),
                id: le32(o + 4),
            })
            .collect());
        acl.check()?;
        Ok(acl)
    }

    fn check(&self) -> std::result::Result<(), AclError> {
        let mut last: Option<(u16, u32)> = None;
        let mut named = false;
        for e in &self.0 {
            if e.perm & !7 != 0 {
                return Err(AclError::Invalid);
            }
            let key = match e.tag {
                tag::USER | tag::GROUP => {
                    named = true;
                    (e.tag, e.id)
                }
                tag::USER_OBJ | tag::GROUP_OBJ | tag::MASK | tag::OTHER => (e.tag, 0),
                _ => return Err(AclError::Invalid),
            };
            if last.is_some_and(|l| l >= key) {
                return Err(AclError::Invalid);
            }
            last = Some(key);
        }
        let has = |t| self.0.iter().any(|e| e.tag == t);
        if !has(tag::USER_OBJ) || !has(tag::GROUP_OBJ) || !has(tag::OTHER) {
            return Err(AclError::Invalid);
        }
        if named && !has(tag::MASK) {
            return Err(AclError::Invalid);
        }
        Ok(())
    }

    /// The xattr form.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = VERSION.to_le_bytes().to_vec();
        for e in &self.0 {
            out.extend_from_slice(&e.tag.to_le_bytes());
            out.extend_from_slice(&e.perm.to_le_bytes());
            let id = if matches!(e.tag, tag::USER | tag::GROUP) {
                e.id
            } else {
                UNDEFINED_ID
            };
            out.extend_from_slice(&id.to_le_bytes());
        }
        out
    }

    fn perm_of(&self, t: u16) -> Option<u16> {
        self.0.iter().find(|e| e.tag == t).map(|e| e.perm)
    }

    fn set_perm(&mut self, t: u16, perm: u32) {
        if let Some(e) = self.0.iter_mut().find(|e| e.tag == t) {
            e.perm = (perm & 7) as u16;
        }
    }

    /// True when the ACL says no more than the mode bits do (no named
    /// entries, no mask).
    pub fn is_minimal(&self) -> bool {
        self.0
            .iter()
            .all(|e| matches!(e.tag, tag::USER_OBJ | tag::GROUP_OBJ | tag::OTHER))
    }

    /// The rwxrwxrwx bits the ACL implies (the mask stands for the group).
    pub fn mode_bits(&self) -> u32 {
        let u = self.perm_of(tag::USER_OBJ).unwrap_or(0);
        let g = self
            .perm_of(tag::MASK)
            .or(self.perm_of(tag::GROUP_OBJ))
            .unwrap_or(0);
        let o = self.perm_of(tag::OTHER).unwrap_or(0);
        u32::from(u) << 6 | u32::from(g) << 3 | u32::from(o)
    }

    /// `posix_acl_chmod`: the owner, mask (or owning group) and other
    /// entries follow the new mode.
    pub fn chmod(&mut self, mode: u32) {
        self.set_perm(tag::USER_OBJ, mode >> 6);
        if self.perm_of(tag::MASK).is_some() {
            self.set_perm(tag::MASK, mode >> 3);
        } else {
            self.set_perm(tag::GROUP_OBJ, mode >> 3);
        }
        self.set_perm(tag::OTHER, mode);
    }

    /// `posix_acl_create_masq`: masks this (inherited) ACL with the
    /// requested `mode` and the mode with it; true when the result needs
    /// an access ACL (it is not minimal).
    pub fn create_masq(&mut self, mode: &mut u32) -> bool {
        let mut m = *mode & 0o777;
        let mut not_equiv = false;
        for e in &mut self.0 {
            match e.tag {
                tag::USER_OBJ => {
                    e.perm &= ((m >> 6) & 7) as u16;
                    m &= (u32::from(e.perm) << 6) | !0o700;
                }
                tag::OTHER => {
                    e.perm &= (m & 7) as u16;
                    m &= u32::from(e.perm) | !0o007;
                }
                tag::USER | tag::GROUP | tag::MASK => not_equiv = true,
                _ => {}
            }
        }
        let t = if self.perm_of(tag::MASK).is_some() {
            tag::MASK
        } else {
            tag::GROUP_OBJ
        };
        if let Some(e) = self.0.iter_mut().find(|e| e.tag == t) {
            e.perm &= ((m >> 3) & 7) as u16;
            m &= (u32::from(e.perm) << 3) | !0o070;
        }
        *mode = (*mode & !0o777) | (m & 0o777);
        not_equiv
    }
}

impl Volume {
    fn acl_of(&mut self, ino: u64, name: &[u8]) -> Result<Option<Acl>> {
        match self.xattr_get(ino, name) {
            Ok(v) => Ok(Some(Acl::decode(&v).map_err(|e| {
                FsError::Corrupt(format!("inode {ino}: stored ACL: {e}"))
            })?)),
            Err(FsError::NoData) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// True when directory `dir` has a default ACL.
    pub fn has_default_acl(&mut self, dir: u64) -> Result<bool> {
        match self.xattr_get(dir, DEFAULT) {
            Ok(_) => Ok(true),
            Err(FsError::NoData) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `posix_acl_create` for the new inode `ino` in `parent`: a default
    /// ACL of the parent masks the mode, becomes the access ACL when it is
    /// not minimal, and a directory inherits it as its own default ACL.
    pub fn acl_inherit(&mut self, parent: u64, ino: u64) -> Result<()> {
        let mut di: Dinode = self.dinode(ino)?;
        if di.di_mode & libc::S_IFMT == libc::S_IFLNK {
            return Ok(());
        }
        let Some(default) = self.acl_of(parent, DEFAULT)? else {
            return Ok(());
        };
        let mut access = default.clone();
        let not_equiv = access.create_masq(&mut di.di_mode);
        self.put_dinode(&di)?;
        if di.is_dir() {
            self.xattr_set(ino, DEFAULT, &default.encode(), SetMode::Any)?;
        }
        if not_equiv {
            self.xattr_set(ino, ACCESS, &access.encode(), SetMode::Any)?;
        }
        Ok(())
    }

    /// `posix_acl_chmod`: after a mode change, the access ACL follows it.
    pub fn acl_chmod(&mut self, ino: u64, mode: u32) -> Result<()> {
        if let Some(mut acl) = self.acl_of(ino, ACCESS)? {
            acl.chmod(mode);
            self.xattr_set(ino, ACCESS, &acl.encode(), SetMode::Replace)?;
        }
        Ok(())
    }

    /// Sets an ACL attribute: validates it; an access ACL sets the mode
    /// (and is dropped when minimal); a default ACL only on directories.
    pub fn acl_set(&mut self, ino: u64, name: &[u8], value: &[u8], mode: SetMode) -> Result<()> {
        let acl = Acl::decode(value)?;
        let mut di = self.dinode(ino)?;
        if name == DEFAULT {
            if !di.is_dir() {
                return Err(FsError::PermissionDenied);
            }
            return self.xattr_set(ino, name, value, mode);
        }
        di.di_mode = (di.di_mode & !0o777) | acl.mode_bits();
        self.put_dinode(&di)?;
        if acl.is_minimal() {
            return match self.xattr_remove(ino, ACCESS) {
                Ok(()) | Err(FsError::NoData) => Ok(()),
                Err(e) => Err(e),
            };
        }
        self.xattr_set(ino, name, &acl.encode(), mode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(entries: &[(u16, u16, u32)]) -> Acl {
        Acl(entries
            .iter()
            .map(|&(tag, perm, id)| AclEntry { tag, perm, id })
            .collect())
    }

    #[test]
    fn xattr_form_round_trips_and_bad_ones_are_refused() {
        let a = acl(&[
            (tag::USER_OBJ, 6, 0),
            (tag::USER, 4, 1000),
            (tag::GROUP_OBJ, 4, 0),
            (tag::MASK, 6, 0),
            (tag::OTHER, 0, 0),
        ]);
        let b = a.encode();
        assert_eq!(b.len(), 4 + 5 * 8);
        assert_eq!(&b[..4], &[2, 0, 0, 0]);
        assert_eq!(Acl::decode(&b).unwrap().encode(), b);
        assert_eq!(Acl::decode(&b).unwrap().0[1], a.0[1]);
        assert_eq!(Acl::decode(&b[..10]), Err(AclError::Malformed));
        let mut v1 = b.clone();
        v1[0] = 1;
        assert_eq!(Acl::decode(&v1), Err(AclError::Malformed));
        // A named user without a mask.
        let no_mask = acl(&[
            (tag::USER_OBJ, 6, 0),
            (tag::USER, 4, 1000),
            (tag::GROUP_OBJ, 4, 0),
            (tag::OTHER, 0, 0),
        ]);
        assert_eq!(Acl::decode(&no_mask.encode()), Err(AclError::Invalid));
        // Out of order.
        let swapped = acl(&[
            (tag::GROUP_OBJ, 4, 0),
            (tag::USER_OBJ, 6, 0),
            (tag::OTHER, 0, 0),
        ]);
        assert_eq!(Acl::decode(&swapped.encode()), Err(AclError::Invalid));
    }

    #[test]
    fn chmod_moves_the_mask_not_the_group() {
        let mut a = acl(&[
            (tag::USER_OBJ, 7, 0),
            (tag::USER, 7, 1000),
            (tag::GROUP_OBJ, 5, 0),
            (tag::MASK, 7, 0),
            (tag::OTHER, 5, 0),
        ]);
        a.chmod(0o640);
        assert_eq!(a.mode_bits(), 0o640);
        assert_eq!(a.perm_of(tag::GROUP_OBJ), Some(5));
        assert_eq!(a.perm_of(tag::MASK), Some(4));
        let mut m = acl(&[
            (tag::USER_OBJ, 7, 0),
            (tag::GROUP_OBJ, 5, 0),
            (tag::OTHER, 5, 0),
        ]);
        m.chmod(0o751);
        assert_eq!(m.perm_of(tag::GROUP_OBJ), Some(5));
        assert_eq!(m.mode_bits(), 0o751);
    }

    #[test]
    fn create_masq_follows_the_kernel() {
        let mut a = acl(&[
            (tag::USER_OBJ, 7, 0),
            (tag::USER, 7, 1000),
            (tag::GROUP_OBJ, 5, 0),
            (tag::MASK, 7, 0),
            (tag::OTHER, 5, 0),
        ]);
        let mut mode = libc::S_IFREG | 0o666;
        assert!(a.create_masq(&mut mode));
        assert_eq!(mode, libc::S_IFREG | 0o664);
        assert_eq!(a.perm_of(tag::USER_OBJ), Some(6));
        assert_eq!(a.perm_of(tag::MASK), Some(6));
        assert_eq!(a.perm_of(tag::GROUP_OBJ), Some(5));
        assert_eq!(a.perm_of(tag::OTHER), Some(4));
        let mut min = acl(&[
            (tag::USER_OBJ, 7, 0),
            (tag::GROUP_OBJ, 0, 0),
            (tag::OTHER, 0, 0),
        ]);
        let mut mode = libc::S_IFDIR | 0o777;
        assert!(!min.create_masq(&mut mode));
        assert_eq!(mode, libc::S_IFDIR | 0o700);
    }
}
