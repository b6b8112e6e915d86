//! Node names to addresses, as cman resolved them.
//!
//! A cluster.conf `clusternode name` is either an IP address literal
//! (`127.0.1.2`) or a host name (`RealServer1`). A name is looked up, in
//! order:
//!
//! 1. in the hosts file (`/etc/hosts`, or the file named by
//!    [`HOSTS_FILE_ENV`] — for tests and labs): the first IPv4 address whose
//!    line lists the name, compared case-insensitively as resolvers do
//!    (IPv6 lines are skipped for now: the cluster speaks IPv4);
//! 2. then through the system resolver (`getaddrinfo`, preferring IPv4);
//!
//! and failing both it is an error naming the node. This is the one place
//! that turns names into addresses: cmand (its own bind address, its peers,
//! which node it is) and the dlm adapter (its peers' addresses) use it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

/// Environment variable naming the hosts file to use instead of
/// [`DEFAULT_HOSTS_FILE`].
pub const HOSTS_FILE_ENV: &str = "CMAN_HOSTS_FILE";

/// The hosts file read by default.
pub const DEFAULT_HOSTS_FILE: &str = "/etc/hosts";

/// A node name that resolves to nothing.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot resolve clusternode {name}: not an IP address, not in {hosts}, \
     and the system resolver says: {resolver}"
)]
pub struct ResolveError {
    /// The node name.
    pub name: String,
    /// The hosts file consulted.
    pub hosts: String,
    /// What the system resolver said.
    pub resolver: String,
}

/// The first IPv4 address of `text` (a hosts file) whose line lists `name`
/// (as its canonical name or an alias), ignoring case and `#` comments.
pub fn lookup_in(text: &str, name: &str) -> Option<Ipv4Addr> {
    text.lines().find_map(|line| {
        let line = line.split('#').next().unwrap_or("");
        let mut fields = line.split_whitespace();
        let ip: Ipv4Addr = fields.next()?.parse().ok()?;
        fields
            .any(|host| host.eq_ignore_ascii_case(name))
            .then_some(ip)
    })
}

/// Resolves node names: an IP literal, the hosts file, the system resolver.
#[derive(Clone, Debug)]
pub struct Resolver {
    hosts_file: PathBuf,
}

impl Resolver {
    /// A resolver reading `hosts_file`.
    pub fn with_hosts_file(hosts_file: impl Into<PathBuf>) -> Resolver {
        Resolver {
            hosts_file: hosts_file.into(),
        }
    }

    /// A resolver reading [`HOSTS_FILE_ENV`]'s file if set, else
    /// [`DEFAULT_HOSTS_FILE`].
    pub fn from_env() -> Resolver {
        let path = std::env::var_os(HOSTS_FILE_ENV)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_HOSTS_FILE));
        Resolver::with_hosts_file(path)
    }

    /// The hosts file this resolver reads.
    pub fn hosts_file(&self) -> &Path {
        &self.hosts_file
    }

    /// The address of node `name` (see the module docs).
    pub fn resolve(&self, name: &str) -> Result<IpAddr, ResolveError> {
        if let Ok(ip) = name.parse::<IpAddr>() {
            return Ok(ip);
        }
        // A missing or unreadable hosts file is like an empty one: the
        // system resolver still has its say.
        let text = std::fs::read_to_string(&self.hosts_file).unwrap_or_default();
        if let Some(ip) = lookup_in(&text, name) {
            return Ok(IpAddr::V4(ip));
        }
        system_resolve(name).map_err(|resolver| ResolveError {
            name: name.to_string(),
            hosts: self.hosts_file.display().to_string(),
            resolver,
        })
    }

    /// The socket address of node `name` at `port`.
    pub fn node_addr(&self, name: &str, port: u16) -> Result<SocketAddr, ResolveError> {
        Ok(SocketAddr::new(self.resolve(name)?, port))
    }
}

/// `getaddrinfo` (through `ToSocketAddrs`, port 0), IPv4 first.
fn system_resolve(name: &str) -> Result<IpAddr, String> {
    let addrs: Vec<SocketAddr> = (name, 0u16)
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .map(|a| a.ip())
        .ok_or_else(|| "no address".to_string())
}

/// The address of node `name` with the [`Resolver::from_env`] resolver.
pub fn resolve(name: &str) -> Result<IpAddr, ResolveError> {
    Resolver::from_env().resolve(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTS: &str = "\
# comment line RealServer9
127.0.0.1\tlocalhost
::1 localhost ip6-localhost realserver3
fe80::1 RealServer4

192.168.10.1 RealServer1 rs1.example.com   # primary
192.168.10.2   RealServer2\trs2 web2 # standby, RealServer5 in a comment
192.168.10.3 # RealServer6 only in a comment
192.168.10.9 realserver2
not-an-ip RealServer7
10.0.0.4 RealServer4
";

    fn ip(s: &str) -> Option<Ipv4Addr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn canonical_names_and_aliases() {
        assert_eq!(lookup_in(HOSTS, "RealServer1"), ip("192.168.10.1"));
        assert_eq!(lookup_in(HOSTS, "rs1.example.com"), ip("192.168.10.1"));
        assert_eq!(lookup_in(HOSTS, "rs2"), ip("192.168.10.2"));
        assert_eq!(lookup_in(HOSTS, "web2"), ip("192.168.10.2"));
        assert_eq!(lookup_in(HOSTS, "localhost"), ip("127.0.0.1"));
    }

    #[test]
    fn first_matching_line_wins_and_case_is_ignored() {
        assert_eq!(lookup_in(HOSTS, "RealServer2"), ip("192.168.10.2"));
        assert_eq!(lookup_in(HOSTS, "REALSERVER2"), ip("192.168.10.2"));
        assert_eq!(lookup_in(HOSTS, "realserver1"), ip("192.168.10.1"));
    }

    #[test]
    fn comments_are_ignored() {
        assert_eq!(lookup_in(HOSTS, "RealServer9"), None);
        assert_eq!(lookup_in(HOSTS, "RealServer5"), None);
        assert_eq!(lookup_in(HOSTS, "RealServer6"), None);
        assert_eq!(lookup_in(HOSTS, "#"), None);
        assert_eq!(lookup_in(HOSTS, "primary"), None);
    }

    #[test]
    fn ipv6_and_malformed_lines_are_skipped() {
        assert_eq!(lookup_in(HOSTS, "realserver3"), None);
        assert_eq!(lookup_in(HOSTS, "ip6-localhost"), None);
        assert_eq!(lookup_in(HOSTS, "RealServer4"), ip("10.0.0.4"));
        assert_eq!(lookup_in(HOSTS, "RealServer7"), None);
        assert_eq!(lookup_in(HOSTS, "not-an-ip"), None);
        assert_eq!(lookup_in("", "x"), None);
        assert_eq!(lookup_in("10.1.1.1", "10.1.1.1"), None);
    }

    #[test]
    fn resolver_order_literal_then_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hosts");
        std::fs::write(&file, "127.0.1.1 nodea\n127.0.1.2 nodeb localhost\n").unwrap();
        let r = Resolver::with_hosts_file(&file);
        assert_eq!(r.resolve("10.2.3.4").unwrap().to_string(), "10.2.3.4");
        assert_eq!(r.resolve("::1").unwrap().to_string(), "::1");
        assert_eq!(r.resolve("NodeA").unwrap().to_string(), "127.0.1.1");
        // The file comes before the system resolver.
        assert_eq!(r.resolve("localhost").unwrap().to_string(), "127.0.1.2");
        assert_eq!(
            r.node_addr("nodeb", 5405).unwrap().to_string(),
            "127.0.1.2:5405"
        );
    }

    #[test]
    fn unresolvable_name_is_an_error_naming_the_node() {
        let dir = tempfile::tempdir().unwrap();
        let r = Resolver::with_hosts_file(dir.path().join("missing"));
        // `.invalid` never resolves (RFC 6761).
        let e = r.resolve("no-such-node.invalid").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("no-such-node.invalid"), "{msg}");
        assert!(msg.contains("missing"), "{msg}");
    }
}
