//! Logged-in sessions: a random token in an HttpOnly, SameSite=Strict
//! cookie, a CSRF token of its own that every action must carry, and an
//! idle timeout (each request moves the expiry).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::users::Role;
use crate::util::{same, token};

/// Most sessions kept at once: past that, the oldest goes.
pub const MAX_SESSIONS: usize = 4096;
/// Name of the session cookie.
pub const COOKIE: &str = "luci_session";

/// One session.
#[derive(Clone, Debug)]
pub struct Session {
    /// Who.
    pub user: String,
    /// What they may do.
    pub role: Role,
    /// The token every form and action carries.
    pub csrf: String,
    expires: Instant,
}

impl Session {
    /// Whether `given` is this session's CSRF token.
    pub fn csrf_ok(&self, given: &str) -> bool {
        same(self.csrf.as_bytes(), given.as_bytes())
    }
}

/// The session table.
pub struct Sessions {
    idle: Duration,
    map: HashMap<String, Session>,
}

impl Sessions {
    /// Sessions that expire after `idle` without a request.
    pub fn new(idle: Duration) -> Sessions {
        Sessions {
            idle,
            map: HashMap::new(),
        }
    }

    /// Opens a session; returns its cookie token.
    pub fn open(&mut self, user: &str, role: Role, now: Instant) -> String {
        self.map.retain(|_, s| s.expires > now);
        if self.map.len() >= MAX_SESSIONS {
            let oldest = self
                .map
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.map.remove(&k);
            }
        }
        let id = token();
        self.map.insert(
            id.clone(),
            Session {
                user: user.to_string(),
                role,
                csrf: token(),
                expires: now + self.idle,
            },
        );
        id
    }

    /// The live session of a cookie token, its expiry moved on.
    pub fn touch(&mut self, id: &str, now: Instant) -> Option<Session> {
        let s = self.map.get_mut(id)?;
        if s.expires <= now {
            self.map.remove(id);
            return None;
        }
        s.expires = now + self.idle;
        Some(s.clone())
    }

    /// Whether a session is still live (without moving its expiry: an
    /// open events stream does not keep a session alive).
    pub fn alive(&self, id: &str, now: Instant) -> bool {
        self.map.get(id).is_some_and(|s| s.expires > now)
    }

    /// Ends a session.
    pub fn close(&mut self, id: &str) {
        self.map.remove(id);
    }
}

/// The value of cookie `name` in a `Cookie:` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_when_idle() {
        let t0 = Instant::now();
        let mut s = Sessions::new(Duration::from_secs(60));
        let id = s.open("alice", Role::Admin, t0);
        let got = s.touch(&id, t0 + Duration::from_secs(50)).unwrap();
        assert_eq!(got.user, "alice");
        assert!(got.csrf_ok(&got.csrf.clone()) && !got.csrf_ok("x"));
        // Moved on by the touch at 50 s.
        assert!(s.touch(&id, t0 + Duration::from_secs(100)).is_some());
        assert!(s.touch(&id, t0 + Duration::from_secs(161)).is_none());
        assert!(s.touch("nope", t0).is_none());
    }

    #[test]
    fn cookie_header() {
        let h = "a=1; luci_session=abc; b=2";
        assert_eq!(cookie(h, COOKIE), Some("abc"));
        assert_eq!(cookie(h, "c"), None);
    }
}
