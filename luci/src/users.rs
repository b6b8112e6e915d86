//! The users file: one user a line, `NAME ROLE HASH`, where ROLE is
//! `admin` or `readonly` and HASH is `pbkdf2-sha256$ROUNDS$SALT$KEY`
//! (salt and derived key in hex, 16 and 32 bytes). `#` starts a comment.
//! The file is read again at every login, so `luci --add-user` takes effect
//! without a restart; it is written with mode 0600.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::util::{hex, same, unhex};

/// PBKDF2-HMAC-SHA256 rounds for new hashes (OWASP's figure for 2023).
pub const ROUNDS: u32 = 600_000;
/// Fewest rounds a stored hash may claim (a weaker one is refused).
const MIN_ROUNDS: u32 = 10_000;

/// What a user may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Everything.
    Admin,
    /// Look only.
    ReadOnly,
}

impl Role {
    /// As written in the users file.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::ReadOnly => "readonly",
        }
    }

    /// From the users file's word.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "readonly" | "read-only" => Some(Role::ReadOnly),
            _ => None,
        }
    }
}

/// Errors of the users file.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    /// Cannot read or write it.
    #[error("users file {0}: {1}")]
    Io(String, std::io::Error),
    /// A line that is not `NAME ROLE HASH`.
    #[error("users file {0} line {1}: {2}")]
    Bad(String, usize, String),
    /// A name with characters outside `[A-Za-z0-9._-]`, or too long.
    #[error("bad user name {0:?}: use letters, digits, '.', '_' and '-' (at most 64)")]
    Name(String),
    /// The name is taken.
    #[error("user {0} already exists")]
    Exists(String),
    /// An empty password.
    #[error("the password is empty")]
    EmptyPassword,
}

/// One user.
#[derive(Clone, Debug)]
pub struct User {
    /// Login name.
    pub name: String,
    /// Role.
    pub role: Role,
    hash: String,
}

fn derive(password: &str, salt: &[u8], rounds: u32) -> [u8; 32] {
    let mut key = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password.as_bytes(), salt, rounds, &mut key);
    key
}

/// A new hash of `password` with a random salt.
pub fn hash_password(password: &str) -> String {
    let mut salt = [0u8; 16];
    rand::fill(&mut salt);
    let key = derive(password, &salt, ROUNDS);
    format!("pbkdf2-sha256${ROUNDS}${}${}", hex(&salt), hex(&key))
}

/// Whether `password` matches a stored hash (false for a malformed one).
pub fn verify_password(password: &str, stored: &str) -> bool {
    let mut it = stored.split('$');
    let (Some("pbkdf2-sha256"), Some(rounds), Some(salt), Some(key), None) =
        (it.next(), it.next(), it.next(), it.next(), it.next())
    else {
        return false;
    };
    let (Ok(rounds), Some(salt), Some(key)) = (rounds.parse::<u32>(), unhex(salt), unhex(key))
    else {
        return false;
    };
    rounds >= MIN_ROUNDS && key.len() == 32 && same(&derive(password, &salt, rounds), &key)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Every user of the file (a missing file has none).
pub fn load(path: &Path) -> Result<Vec<User>, UsersError> {
    let p = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(UsersError::Io(p, e)),
    };
    let mut users = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        let bad = |m: &str| UsersError::Bad(p.clone(), i + 1, m.to_string());
        let [name, role, hash] = f[..] else {
            return Err(bad("expected NAME ROLE HASH"));
        };
        if !valid_name(name) {
            return Err(bad("bad user name"));
        }
        let role = Role::parse(role).ok_or_else(|| bad("role must be admin or readonly"))?;
        users.push(User {
            name: name.to_string(),
            role,
            hash: hash.to_string(),
        });
    }
    Ok(users)
}

/// The role of `name` if `password` is right. An unknown name costs the
/// same work as a wrong password.
pub fn check(users: &[User], name: &str, password: &str) -> Option<Role> {
    match users.iter().find(|u| u.name == name) {
        Some(u) => verify_password(password, &u.hash).then_some(u.role),
        None => {
            let _ = derive(password, b"luci: no such user", ROUNDS);
            None
        }
    }
}

/// Appends a user with a new hash of `password` (mode 0600 if created).
pub fn add(path: &Path, name: &str, role: Role, password: &str) -> Result<(), UsersError> {
    if !valid_name(name) {
        return Err(UsersError::Name(name.to_string()));
    }
    if password.is_empty() {
        return Err(UsersError::EmptyPassword);
    }
    if load(path)?.iter().any(|u| u.name == name) {
        return Err(UsersError::Exists(name.to_string()));
    }
    let io = |e| UsersError::Io(path.display().to_string(), e);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    let line = format!("{name} {} {}\n", role.as_str(), hash_password(password));
    f.write_all(line.as_bytes()).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_differ() {
        let a = hash_password("secret");
        let b = hash_password("secret");
        assert_ne!(a, b, "salted");
        assert!(verify_password("secret", &a));
        assert!(!verify_password("Secret", &a));
        assert!(!verify_password("secret", "pbkdf2-sha256$1$00$00"));
        assert!(!verify_password("secret", "plain"));
    }

    #[test]
    fn file_round_trip_and_errors() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("users");
        add(&p, "alice", Role::Admin, "pw1").unwrap();
        add(&p, "bob", Role::ReadOnly, "pw2").unwrap();
        assert!(matches!(
            add(&p, "alice", Role::Admin, "x"),
            Err(UsersError::Exists(_))
        ));
        assert!(matches!(
            add(&p, "a b", Role::Admin, "x"),
            Err(UsersError::Name(_))
        ));
        let users = load(&p).unwrap();
        assert_eq!(check(&users, "alice", "pw1"), Some(Role::Admin));
        assert_eq!(check(&users, "bob", "pw2"), Some(Role::ReadOnly));
        assert_eq!(check(&users, "bob", "pw1"), None);
        assert_eq!(check(&users, "carol", "pw1"), None);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(&p, "alice admin\n").unwrap();
        let e = load(&p).unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
    }
}
