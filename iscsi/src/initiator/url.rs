//! `iscsi://` URLs, with libiscsi's syntax (`iscsi_parse_full_url`):
//!
//! ```text
//! iscsi://[<user>[%<password>]@]<host>[:<port>]/<target-iqn>/<lun>[?<args>]
//! ```
//!
//! `host` may be an IPv6 address in brackets. The arguments libiscsi knows
//! that matter here are `target_user` and `target_password` (mutual CHAP:
//! the target's credentials) and `header_digest` (`crc32c`, `none`, ...).
//! User and password may be percent-encoded; `%` followed by two hex digits
//! in the user part would be ambiguous, so as libiscsi does the first `%`
//! separates user and password.

use super::{InitiatorError, Result};

/// The default iSCSI port.
pub const DEFAULT_PORT: u16 = 3260;

/// A parsed `iscsi://` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IscsiUrl {
    /// Host name or address (without IPv6 brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Target IQN.
    pub target: String,
    /// Logical unit number.
    pub lun: u64,
    /// CHAP user and secret the initiator presents.
    pub user: Option<String>,
    pub secret: Option<String>,
    /// The target's CHAP credentials for mutual authentication.
    pub target_user: Option<String>,
    pub target_secret: Option<String>,
    /// Ask for CRC32C header digests.
    pub header_digest: bool,
}

fn bad(url: &str, why: &'static str) -> InitiatorError {
    InitiatorError::BadUrl {
        url: url.to_string(),
        why,
    }
}

/// Decodes `%XX` escapes; anything else is kept as is.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl IscsiUrl {
    /// Parses `iscsi://...`.
    pub fn parse(url: &str) -> Result<IscsiUrl> {
        let rest = url
            .strip_prefix("iscsi://")
            .ok_or_else(|| bad(url, "does not start with iscsi://"))?;
        let (rest, args) = match rest.split_once('?') {
            Some((r, a)) => (r, Some(a)),
            None => (rest, None),
        };
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((a, r)) => (Some(a), r),
            None => (None, rest),
        };
        let (portal, path) = rest
            .split_once('/')
            .ok_or_else(|| bad(url, "missing /<target-iqn>/<lun>"))?;
        let (host, port) = parse_portal(portal).ok_or_else(|| bad(url, "bad host or port"))?;
        let (target, lun) = path
            .rsplit_once('/')
            .ok_or_else(|| bad(url, "missing /<lun> after the target name"))?;
        if target.is_empty() {
            return Err(bad(url, "empty target name"));
        }
        let lun: u64 = lun.parse().map_err(|_| bad(url, "LUN is not a number"))?;
        if lun >= 0x4000 {
            return Err(bad(url, "LUN out of range"));
        }
        let mut parsed = IscsiUrl {
            host,
            port,
            target: target.to_string(),
            lun,
            user: None,
            secret: None,
            target_user: None,
            target_secret: None,
            header_digest: false,
        };
        if let Some(auth) = auth {
            let (u, p) = match auth.split_once('%') {
                Some((u, p)) => (u, Some(p)),
                None => (auth, None),
            };
            parsed.user = Some(unescape(u));
            parsed.secret = p.map(unescape);
        }
        for arg in args.into_iter().flat_map(|a| a.split('&')) {
            let (k, v) = arg.split_once('=').unwrap_or((arg, ""));
            match k {
                "target_user" => parsed.target_user = Some(unescape(v)),
                "target_password" => parsed.target_secret = Some(unescape(v)),
                "header_digest" => parsed.header_digest = v.eq_ignore_ascii_case("crc32c"),
                _ => return Err(bad(url, "unknown URL argument")),
            }
        }
        Ok(parsed)
    }

    /// `host:port`, with brackets around an IPv6 address.
    pub fn portal(&self) -> String {
        format_portal(&self.host, self.port)
    }
}

/// Formats `host:port`, bracketing IPv6 addresses.
pub fn format_portal(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Parses `host[:port]` or `[v6][:port]`; the port defaults to 3260.
pub fn parse_portal(s: &str) -> Option<(String, u16)> {
    let (host, port) = if let Some(v6) = s.strip_prefix('[') {
        let (h, rest) = v6.split_once(']')?;
        match rest {
            "" => (h, None),
            r => (h, Some(r.strip_prefix(':')?)),
        }
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => DEFAULT_PORT,
    };
    Some((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libiscsi_url_forms() {
        let u = IscsiUrl::parse("iscsi://127.0.0.1/iqn.2026-11.test:disk/1").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.lun), ("127.0.0.1", 3260, 1));
        assert_eq!(u.target, "iqn.2026-11.test:disk");
        assert_eq!(u.user, None);

        let u = IscsiUrl::parse("iscsi://bob%s3cr%65t@host:3261/iqn.x:y/0").unwrap();
        assert_eq!(u.user.as_deref(), Some("bob"));
        assert_eq!(u.secret.as_deref(), Some("s3cret"));
        assert_eq!((u.host.as_str(), u.port), ("host", 3261));

        let u = IscsiUrl::parse(
            "iscsi://a%b@[::1]:3262/iqn.x/2?target_user=t&target_password=tp&header_digest=crc32c",
        )
        .unwrap();
        assert_eq!(u.host, "::1");
        assert_eq!(u.portal(), "[::1]:3262");
        assert_eq!(u.target_user.as_deref(), Some("t"));
        assert_eq!(u.target_secret.as_deref(), Some("tp"));
        assert!(u.header_digest);
    }

    #[test]
    fn malformed_urls_are_errors() {
        for bad in [
            "http://h/iqn/1",
            "iscsi://h",
            "iscsi://h/iqn",
            "iscsi://h/iqn/x",
            "iscsi://h:99999/iqn/1",
            "iscsi://h//1",
            "iscsi://h/iqn/1?bogus=1",
            "iscsi://h/iqn/16384",
        ] {
            assert!(IscsiUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
