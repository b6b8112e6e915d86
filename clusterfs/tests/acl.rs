//! POSIX ACLs in the core: inheritance of a directory's default ACL
//! (posix_acl_create), chmod keeping the mask in step (posix_acl_chmod),
//! an access ACL setting the mode (posix_acl_update_mode), and the errors.
//! The kernel's enforcement is tested through a mount in
//! tests/tests/clusterfs_fuse.rs.

mod common;

use clusterfs::acl::{tag, Acl, AclEntry, ACCESS, DEFAULT};
use clusterfs::fs::SetAttr;
use common::{assert_fsck_clean, image, mount};

fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    Acl(entries
        .iter()
        .map(|&(tag, perm, id)| AclEntry { tag, perm, id })
        .collect())
    .encode()
}

fn perm(v: &[u8], t: u16) -> u16 {
    Acl::decode(v)
        .unwrap()
        .0
        .iter()
        .find(|e| e.tag == t)
        .unwrap()
        .perm
}

#[test]
fn default_acls_are_inherited_and_modes_follow_acls() {
    let img = image(64, 4096);
    let mut fs = mount(img.path());
    let root = fs.root();
    let d = fs.mkdir(root, b"d", 0o755, 0, 0).unwrap();
    let default = acl(&[
        (tag::USER_OBJ, 7, 0),
        (tag::USER, 7, 1000),
        (tag::GROUP_OBJ, 5, 0),
        (tag::MASK, 7, 0),
        (tag::OTHER, 5, 0),
    ]);
    fs.setxattr(d.ino, DEFAULT, &default, 0).unwrap();

    // A file: the requested mode masks the inherited ACL and vice versa.
    let f = fs.mknod(d.ino, b"f", 0o666, 0, 0, 0).unwrap();
    assert_eq!(f.mode & 0o777, 0o664);
    let a = fs.getxattr(f.ino, ACCESS).unwrap();
    assert_eq!(perm(&a, tag::USER), 7);
    assert_eq!(perm(&a, tag::MASK), 6);
    assert_eq!(perm(&a, tag::OTHER), 4);
    assert!(
        fs.getxattr(f.ino, DEFAULT).is_err(),
        "files get no default ACL"
    );

    // A directory inherits the default ACL as its own default too.
    let sub = fs.mkdir(d.ino, b"sub", 0o750, 0, 0).unwrap();
    assert_eq!(sub.mode & 0o777, 0o750);
    assert_eq!(fs.getxattr(sub.ino, DEFAULT).unwrap(), default);
    assert_eq!(perm(&fs.getxattr(sub.ino, ACCESS).unwrap(), tag::OTHER), 0);

    // A minimal default ACL gives no access ACL, only the mode.
    let m = fs.mkdir(root, b"m", 0o777, 0, 0).unwrap();
    let minimal = acl(&[
        (tag::USER_OBJ, 7, 0),
        (tag::GROUP_OBJ, 0, 0),
        (tag::OTHER, 0, 0),
    ]);
    fs.setxattr(m.ino, DEFAULT, &minimal, 0).unwrap();
    let mf = fs.mknod(m.ino, b"x", 0o666, 0, 0, 0).unwrap();
    assert_eq!(mf.mode & 0o777, 0o600);
    assert_eq!(
        fs.getxattr(mf.ino, ACCESS).unwrap_err().errno(),
        libc::ENODATA
    );

    // chmod moves the mask (not the owning group's entry).
    let set = SetAttr {
        mode: Some(0o600),
        ..Default::default()
    };
    fs.setattr(f.ino, set).unwrap();
    let a = fs.getxattr(f.ino, ACCESS).unwrap();
    assert_eq!(perm(&a, tag::MASK), 0);
    assert_eq!(perm(&a, tag::GROUP_OBJ), 5);
    assert_eq!(perm(&a, tag::USER_OBJ), 6);

    // Setting an access ACL sets the mode; a minimal one is not stored.
    let g = fs.mknod(root, b"g", 0o600, 0, 0, 0).unwrap();
    let full = acl(&[
        (tag::USER_OBJ, 6, 0),
        (tag::USER, 4, 65534),
        (tag::GROUP_OBJ, 0, 0),
        (tag::MASK, 4, 0),
        (tag::OTHER, 0, 0),
    ]);
    fs.setxattr(g.ino, ACCESS, &full, 0).unwrap();
    assert_eq!(fs.getattr(g.ino).unwrap().mode & 0o777, 0o640);
    let plain = acl(&[
        (tag::USER_OBJ, 7, 0),
        (tag::GROUP_OBJ, 5, 0),
        (tag::OTHER, 1, 0),
    ]);
    fs.setxattr(g.ino, ACCESS, &plain, 0).unwrap();
    assert_eq!(fs.getattr(g.ino).unwrap().mode & 0o777, 0o751);
    assert_eq!(
        fs.getxattr(g.ino, ACCESS).unwrap_err().errno(),
        libc::ENODATA
    );

    // Errors: malformed or invalid ACLs, a default ACL on a file.
    assert_eq!(
        fs.setxattr(g.ino, ACCESS, b"junk", 0).unwrap_err().errno(),
        libc::EINVAL
    );
    let no_mask = acl(&[
        (tag::USER_OBJ, 6, 0),
        (tag::USER, 4, 7),
        (tag::GROUP_OBJ, 0, 0),
        (tag::OTHER, 0, 0),
    ]);
    assert_eq!(
        fs.setxattr(g.ino, ACCESS, &no_mask, 0).unwrap_err().errno(),
        libc::EINVAL
    );
    assert_eq!(
        fs.setxattr(g.ino, DEFAULT, &default, 0)
            .unwrap_err()
            .errno(),
        libc::EACCES
    );
    assert_eq!(fs.getattr(g.ino).unwrap().mode & 0o777, 0o751);
    fs.unmount().unwrap();
    assert_fsck_clean(img.path());

    let mut fs = mount(img.path());
    let d = fs.lookup(fs.root(), b"d").unwrap();
    assert!(fs.has_default_acl(d.ino).unwrap());
    let f = fs.lookup(d.ino, b"f").unwrap();
    assert_eq!(f.mode & 0o777, 0o600);
    fs.unmount().unwrap();
}
