//! The cluster key: where cmand finds it, the fallback derived from the
//! cluster name, and making a new one (`cman_tool keygen`).
//!
//! cmand reads `--key-file` (which must exist), else `STATE_DIR/authkey`,
//! else [`DEFAULT_KEY_FILE`]. When none was given and none exists, it does
//! what cman did (it used the cluster name as its key): it derives the key
//! from the cluster name ([`key_from_cluster_name`]), so that every node of
//! the cluster agrees without any setup. That key keeps out only accidents
//! (another cluster on the same network), not attackers: anyone who knows
//! the cluster name can forge packets.
//!
//! A key file must be private: [`load`] refuses one that group or others
//! can read or write (its mode lets them, and every directory above it
//! lets them through), or that belongs to a user other than root and the
//! caller, and one shorter than [`crate::wire::MIN_KEY_BYTES`].
//!
//! The DLM's users (lock_dlm mounts, `dlm_cman_node`) authenticate their
//! TCP peers with the same key ([`load_for_dlm`]): cmand records in its
//! state directory which key file it uses ([`KEY_IN_USE`]), and they read
//! that file. The key itself never leaves the node: cmand's config pushes
//! carry cluster.conf, which holds no key.

use sha2::{Digest, Sha256};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The system-wide key file.
pub const DEFAULT_KEY_FILE: &str = "/etc/cluster/authkey";

/// Bytes written by [`write_new_key`] (corosync-keygen's length).
pub const NEW_KEY_BYTES: usize = 128;

/// In cmand's state directory: the path of the key file cmand runs with
/// (absent when its key is derived from the cluster name).
pub const KEY_IN_USE: &str = "authkey.in-use";

/// The domain separator of the derived key (never change it: every node of
/// a cluster must derive the same key).
const DERIVED_KEY_PREFIX: &[u8] = b"rhcs cman key from cluster name v1\0";

/// Where the cluster key came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// Read from this file.
    File(PathBuf),
    /// Derived from the cluster name (no key file).
    ClusterName,
}

/// Why there is no usable key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A key file is too short.
    #[error("authentication key {0}: too short (at least {min} bytes)", min = crate::wire::MIN_KEY_BYTES)]
    TooShort(String),
    /// The key file given explicitly cannot be read.
    #[error("authentication key {0}: {1}")]
    Unreadable(String, std::io::Error),
    /// `keygen` would overwrite an existing key.
    #[error("{0} already exists; use -f to overwrite it (every node needs the same key)")]
    Exists(String),
    /// Writing a new key failed.
    #[error("writing {0}: {1}")]
    Write(String, std::io::Error),
    /// Other users can read or change the key file.
    #[error("authentication key {0}: {1}; refusing it (chmod 600 it, owned by root)")]
    Exposed(String, String),
}

/// The key every node of cluster `cluster_name` derives when it has no key
/// file: SHA-256 of a fixed prefix and the name (32 bytes).
pub fn key_from_cluster_name(cluster_name: &str) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(DERIVED_KEY_PREFIX);
    h.update(cluster_name.as_bytes());
    h.finalize().to_vec()
}

/// The warning logged when the key is derived from the cluster name.
pub fn derived_key_warning(cluster_name: &str) -> String {
    format!(
        "WARNING: no cluster key file; using a key derived from the cluster name \
         \"{cluster_name}\". This keeps out only accidents (another cluster on the same \
         network), NOT attackers: anyone who knows the cluster name can join or forge \
         messages. Make a real key with `cman_tool keygen` (writes {DEFAULT_KEY_FILE}), \
         copy it to every node and restart cmand."
    )
}

fn check_len(path: &Path, bytes: Vec<u8>) -> Result<Vec<u8>, KeyError> {
    if bytes.len() < crate::wire::MIN_KEY_BYTES {
        return Err(KeyError::TooShort(path.display().to_string()));
    }
    Ok(bytes)
}

/// Why other users could read or change the key file at `path`, if they
/// can: its owner is neither root nor the caller, or its mode grants group
/// or others access and every directory above it lets them through (a
/// 0644 file in a 0700 directory is out of their reach).
pub fn exposure(path: &Path) -> std::io::Result<Option<String>> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != 0 && meta.uid() != me {
        return Ok(Some(format!("owned by uid {}", meta.uid())));
    }
    let mode = meta.mode() & 0o777;
    let (group, other) = (mode & 0o060 != 0, mode & 0o006 != 0);
    if !group && !other {
        return Ok(None);
    }
    // Can the class reach the file? Search permission on every ancestor.
    let full = std::fs::canonicalize(path)?;
    let (mut group_reach, mut other_reach) = (group, other);
    for dir in full.ancestors().skip(1) {
        let m = std::fs::metadata(dir)?.mode();
        other_reach &= m & 0o001 != 0;
        group_reach &= m & 0o011 != 0;
    }
    Ok((group_reach || other_reach).then(|| {
        let who = if other_reach { "others" } else { "its group" };
        format!("mode {mode:04o} lets {who} read or change it")
    }))
}

/// Reads key file `path`, refusing it when it is not private or too short.
fn read_private(path: &Path) -> std::io::Result<Result<Vec<u8>, KeyError>> {
    let bytes = std::fs::read(path)?;
    let name = path.display().to_string();
    if let Some(why) = exposure(path)? {
        return Ok(Err(KeyError::Exposed(name, why)));
    }
    Ok(check_len(path, bytes))
}

/// The cluster key: `explicit` (must be readable), else the first of
/// `defaults` that exists, else the key derived from `cluster_name`.
pub fn load(
    explicit: Option<&Path>,
    defaults: &[PathBuf],
    cluster_name: &str,
) -> Result<(Vec<u8>, KeySource), KeyError> {
    if let Some(path) = explicit {
        let bytes =
            read_private(path).map_err(|e| KeyError::Unreadable(path.display().to_string(), e))?;
        return Ok((bytes?, KeySource::File(path.to_path_buf())));
    }
    for path in defaults {
        match read_private(path) {
            Ok(bytes) => return Ok((bytes?, KeySource::File(path.clone()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            // A key that exists but cannot be read is not "no key": falling
            // back would split the cluster.
            Err(e) => return Err(KeyError::Unreadable(path.display().to_string(), e)),
        }
    }
    Ok((key_from_cluster_name(cluster_name), KeySource::ClusterName))
}

/// Records in cmand's state directory which key file it runs with
/// ([`KEY_IN_USE`]), for the DLM's users; removes the record when the key
/// is derived from the cluster name.
pub fn record_in_use(state_dir: &Path, source: &KeySource) -> std::io::Result<()> {
    let rec = state_dir.join(KEY_IN_USE);
    match source {
        KeySource::File(path) => {
            let abs = std::fs::canonicalize(path)?;
            let tmp = state_dir.join(format!("{KEY_IN_USE}.tmp"));
            std::fs::write(&tmp, abs.as_os_str().as_encoded_bytes())?;
            std::fs::rename(&tmp, &rec)
        }
        KeySource::ClusterName => match std::fs::remove_file(&rec) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
    }
}

/// The key of the cmand whose state directory is `state_dir`, for a DLM
/// user on that node: the file cmand recorded ([`record_in_use`]), else
/// the files cmand looks for by default, else the key derived from
/// `cluster_name` (with the same loud warning, on stderr and in the log).
/// Refused like cmand refuses it: not private, too short, unreadable.
pub fn load_for_dlm(state_dir: &Path, cluster_name: &str) -> Result<dlm::ClusterKey, KeyError> {
    let recorded = match std::fs::read(state_dir.join(KEY_IN_USE)) {
        Ok(p) => Some(PathBuf::from(
            String::from_utf8_lossy(&p).trim().to_string(),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(KeyError::Unreadable(KEY_IN_USE.into(), e)),
    };
    let defaults = [state_dir.join("authkey"), PathBuf::from(DEFAULT_KEY_FILE)];
    let (key, source) = load(recorded.as_deref(), &defaults, cluster_name)?;
    if source == KeySource::ClusterName {
        let warning = derived_key_warning(cluster_name);
        eprintln!("dlm: {warning}");
        tracing::warn!("{warning}");
    }
    dlm::ClusterKey::new(&key).map_err(|_| KeyError::TooShort("cluster key".into()))
}

/// Writes [`NEW_KEY_BYTES`] random bytes to `path` with mode 0400, refusing
/// to replace an existing file unless `force`.
pub fn write_new_key(path: &Path, force: bool) -> Result<(), KeyError> {
    use rand::TryRngCore;
    let name = path.display().to_string();
    let werr = |e| KeyError::Write(name.clone(), e);
    if path.exists() && !force {
        return Err(KeyError::Exists(name));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(werr)?;
    }
    let mut key = vec![0u8; NEW_KEY_BYTES];
    rand::rngs::OsRng
        .try_fill_bytes(&mut key)
        .map_err(|e| werr(std::io::Error::other(e.to_string())))?;
    // Written beside the target and renamed over it, so a failure never
    // leaves a half-written key; the old one (mode 0400) is replaced, not
    // opened for writing.
    let tmp = path.with_extension("keygen.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o400)
        .open(&tmp)
        .map_err(werr)?;
    f.write_all(&key).and_then(|_| f.sync_all()).map_err(werr)?;
    drop(f);
    if !force && path.exists() {
        let _ = std::fs::remove_file(&tmp);
        return Err(KeyError::Exists(name));
    }
    std::fs::rename(&tmp, path).map_err(werr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn derived_key_is_the_same_for_the_same_name() {
        let a = key_from_cluster_name("httpd_cluster");
        assert_eq!(a, key_from_cluster_name("httpd_cluster"));
        assert_eq!(a.len(), 32);
        assert!(a.len() >= crate::wire::MIN_KEY_BYTES);
        assert_ne!(a, key_from_cluster_name("httpd_cluster2"));
        assert_ne!(a, key_from_cluster_name("HTTPD_CLUSTER"));
        assert_ne!(a, key_from_cluster_name(""));
        // Not the name itself.
        assert_ne!(&a[..13], b"httpd_cluster");
    }

    #[test]
    fn load_prefers_explicit_then_defaults_then_the_name() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        let missing = dir.path().join("missing");
        std::fs::write(&b, b"0123456789abcdef-b").unwrap();
        std::fs::set_permissions(&b, std::fs::Permissions::from_mode(0o600)).unwrap();
        let (k, src) = load(None, &[missing.clone(), b.clone()], "c").unwrap();
        assert_eq!(
            (k.as_slice(), src),
            (&b"0123456789abcdef-b"[..], KeySource::File(b.clone()))
        );
        let (k, src) = load(None, &[missing.clone(), a.clone()], "c").unwrap();
        assert_eq!(
            (k, src),
            (key_from_cluster_name("c"), KeySource::ClusterName)
        );
        // An explicit key file must exist.
        let e = load(Some(&missing), std::slice::from_ref(&b), "c").unwrap_err();
        assert!(matches!(e, KeyError::Unreadable(..)), "{e}");
        std::fs::write(&a, b"short").unwrap();
        std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            load(Some(&a), &[], "c"),
            Err(KeyError::TooShort(_))
        ));
        assert!(matches!(load(None, &[a], "c"), Err(KeyError::TooShort(_))));
    }

    #[test]
    fn keys_other_users_can_read_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let set = |p: &Path, mode| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
        };
        set(dir.path(), 0o755);
        let key = dir.path().join("authkey");
        std::fs::write(&key, b"0123456789abcdef-secret").unwrap();
        for mode in [0o644, 0o640, 0o604, 0o660, 0o602] {
            set(&key, mode);
            let e = load(Some(&key), &[], "c").unwrap_err();
            assert!(matches!(e, KeyError::Exposed(..)), "{mode:o}: {e}");
            // Found by default, it is refused too (no fallback to the name).
            let e = load(None, std::slice::from_ref(&key), "c").unwrap_err();
            assert!(matches!(e, KeyError::Exposed(..)), "{mode:o}: {e}");
        }
        for mode in [0o600, 0o400] {
            set(&key, mode);
            assert!(load(Some(&key), &[], "c").is_ok(), "{mode:o}");
        }
        // Out of reach of group and others: the directory keeps them out.
        set(&key, 0o644);
        set(dir.path(), 0o700);
        assert_eq!(exposure(&key).unwrap(), None);
        set(dir.path(), 0o750);
        set(&key, 0o604);
        assert_eq!(exposure(&key).unwrap(), None, "others stopped by the dir");
        set(&key, 0o640);
        assert!(exposure(&key).unwrap().is_some(), "the group gets through");
    }

    #[test]
    fn the_dlm_reads_the_key_file_cmand_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let key = dir.path().join("elsewhere.key");
        std::fs::write(&key, b"0123456789abcdef-recorded").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        record_in_use(&state, &KeySource::File(key.clone())).unwrap();
        let k = load_for_dlm(&state, "c").unwrap();
        assert_eq!(format!("{k:?}"), "ClusterKey(25 bytes)");
        // cmand on the derived key: the record goes, the DLM derives too.
        record_in_use(&state, &KeySource::ClusterName).unwrap();
        assert!(!state.join(KEY_IN_USE).exists());
        let k = load_for_dlm(&state, "c").unwrap();
        assert_eq!(format!("{k:?}"), "ClusterKey(32 bytes)");
        // A recorded file that is gone is an error, not a fallback.
        record_in_use(&state, &KeySource::File(key.clone())).unwrap();
        std::fs::remove_file(&key).unwrap();
        assert!(load_for_dlm(&state, "c").is_err());
    }

    #[test]
    fn keygen_writes_a_private_key_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/authkey");
        write_new_key(&path, false).unwrap();
        let first = std::fs::read(&path).unwrap();
        assert_eq!(first.len(), NEW_KEY_BYTES);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o400);
        let e = write_new_key(&path, false).unwrap_err();
        assert!(matches!(e, KeyError::Exists(_)), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), first);
        write_new_key(&path, true).unwrap();
        let second = std::fs::read(&path).unwrap();
        assert_eq!(second.len(), NEW_KEY_BYTES);
        assert_ne!(first, second);
        assert!(!dir.path().join("sub/authkey.keygen.tmp").exists());
    }
}
