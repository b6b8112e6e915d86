//! `lvm.conf`: where it is, what the commands read from it, and the
//! device filter.
//!
//! The file is `$LVM_SYSTEM_DIR/lvm.conf` (default `/etc/lvm/lvm.conf`),
//! as lvm2 finds it; `--config STRING` on any command is merged over it.
//! Keys read (lvm2's names):
//! * `devices/dir` (`/dev`): where `/dev/VG/LV` files of active LVs go.
//! * `devices/scan` (`["/dev"]`): directories searched for PVs.
//! * `devices/filter` (accept all): `"a|regex|"` / `"r|regex|"`, first match wins.
//! * `global/locking_type` (1): 1 local file locks, 3 clustered (clvmd).
//! * `global/locking_dir` (`/run/lock/lvm`): local lock files.
//! * `global/clvmd_socket` (`/run/lvm/clvmd.sock`; ours): where clvmd listens.
//! * `devices/extra` (ours): more devices by path, e.g. `iscsi://` LUNs.

use std::path::{Path, PathBuf};

use crate::config::{self, Section};

/// The merged configuration.
#[derive(Debug, Clone, Default)]
pub struct Conf {
    /// The tree.
    pub tree: Section,
    /// The file it was read from, if any.
    pub file: Option<PathBuf>,
}

/// Default lock directory.
pub const DEFAULT_LOCKING_DIR: &str = "/run/lock/lvm";
/// Default clvmd socket.
pub const DEFAULT_CLVMD_SOCKET: &str = "/run/lvm/clvmd.sock";

/// The system dir: `$LVM_SYSTEM_DIR` or `/etc/lvm`.
pub fn system_dir() -> PathBuf {
    std::env::var_os("LVM_SYSTEM_DIR").map_or_else(|| PathBuf::from("/etc/lvm"), PathBuf::from)
}

impl Conf {
    /// Reads `lvm.conf` from the system dir (missing = defaults) and merges
    /// the `--config` strings over it.
    pub fn load(overrides: &[String]) -> Result<Conf, String> {
        let file = system_dir().join("lvm.conf");
        let mut tree = match std::fs::read_to_string(&file) {
            Ok(t) => config::parse(&t).map_err(|e| format!("{}: {e}", file.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Section::default(),
            Err(e) => return Err(format!("{}: {e}", file.display())),
        };
        for o in overrides {
            tree.merge(config::parse(o).map_err(|e| format!("--config: {e}"))?);
        }
        Ok(Conf {
            tree,
            file: Some(file),
        })
    }

    /// `devices/dir`.
    pub fn dev_dir(&self) -> PathBuf {
        PathBuf::from(self.tree.str("devices/dir").unwrap_or("/dev"))
    }

    /// `devices/scan`.
    pub fn scan_dirs(&self) -> Vec<PathBuf> {
        let dirs = self
            .tree
            .strs("devices/scan")
            .unwrap_or_else(|| vec!["/dev".into()]);
        dirs.into_iter().map(PathBuf::from).collect()
    }

    /// `devices/extra`.
    pub fn extra_devices(&self) -> Vec<String> {
        self.tree.strs("devices/extra").unwrap_or_default()
    }

    /// `global/locking_type`.
    pub fn locking_type(&self) -> i64 {
        self.tree.int("global/locking_type").unwrap_or(1)
    }

    /// `global/locking_dir`.
    pub fn locking_dir(&self) -> PathBuf {
        PathBuf::from(
            self.tree
                .str("global/locking_dir")
                .unwrap_or(DEFAULT_LOCKING_DIR),
        )
    }

    /// `global/clvmd_socket`.
    pub fn clvmd_socket(&self) -> PathBuf {
        PathBuf::from(
            self.tree
                .str("global/clvmd_socket")
                .unwrap_or(DEFAULT_CLVMD_SOCKET),
        )
    }

    /// The device filter.
    pub fn filter(&self) -> Result<Filter, String> {
        Filter::new(&self.tree.strs("devices/filter").unwrap_or_default())
    }
}

/// lvm2's `devices/filter`: patterns tried in order, the first match
/// decides; a device no pattern matches is accepted.
#[derive(Debug, Clone)]
pub struct Filter {
    rules: Vec<(bool, Regex)>,
}

impl Filter {
    /// Parses `"a|re|"` / `"r|re|"` rules (any delimiter character).
    pub fn new(rules: &[String]) -> Result<Filter, String> {
        let mut out = Vec::new();
        for r in rules {
            let mut chars = r.chars();
            let accept = match chars.next() {
                Some('a') => true,
                Some('r') => false,
                _ => {
                    return Err(format!(
                        "invalid filter pattern {r:?}: must start with a or r"
                    ))
                }
            };
            let rest: String = chars.collect();
            let delim = rest
                .chars()
                .next()
                .ok_or_else(|| format!("invalid filter pattern {r:?}"))?;
            let body = &rest[delim.len_utf8()..];
            let body = body
                .strip_suffix(delim)
                .ok_or_else(|| format!("invalid filter pattern {r:?}: no closing {delim}"))?;
            out.push((accept, Regex::new(body)?));
        }
        Ok(Filter { rules: out })
    }

    /// Whether `path` passes.
    pub fn accepts(&self, path: &str) -> bool {
        self.rules
            .iter()
            .find(|(_, re)| re.is_match(path))
            .is_none_or(|(a, _)| *a)
    }
}

/// The regex subset lvm2 filters use: literals, `.`, `[...]` classes
/// (ranges, `^` negation), `*` `+` `?`, `^` and `$` anchors, `\` escapes.
#[derive(Debug, Clone)]
pub struct Regex {
    atoms: Vec<(Atom, Rep)>,
    start: bool,
    end: bool,
}

#[derive(Debug, Clone)]
enum Atom {
    Any,
    Char(char),
    Class(bool, Vec<(char, char)>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Rep {
    One,
    Star,
    Plus,
    Opt,
}

impl Atom {
    fn matches(&self, c: char) -> bool {
        match self {
            Atom::Any => true,
            Atom::Char(x) => *x == c,
            Atom::Class(neg, ranges) => ranges.iter().any(|(a, b)| (*a..=*b).contains(&c)) != *neg,
        }
    }
}

impl Regex {
    /// Compiles a pattern.
    pub fn new(p: &str) -> Result<Regex, String> {
        let mut cs: Vec<char> = p.chars().collect();
        let start = cs.first() == Some(&'^');
        if start {
            cs.remove(0);
        }
        let end = cs.last() == Some(&'$') && (cs.len() < 2 || cs[cs.len() - 2] != '\\');
        if end {
            cs.pop();
        }
        let mut atoms = Vec::new();
        let mut i = 0;
        while i < cs.len() {
            let atom = match cs[i] {
                '.' => Atom::Any,
                '\\' => {
                    i += 1;
                    Atom::Char(*cs.get(i).ok_or("trailing \\ in pattern")?)
                }
                '[' => {
                    let (a, next) = class(&cs, i + 1)?;
                    i = next - 1;
                    a
                }
                '*' | '+' | '?' | '(' | ')' | '|' => {
                    return Err(format!(
                        "unsupported regex {p:?} (no groups or alternation)"
                    ))
                }
                c => Atom::Char(c),
            };
            i += 1;
            let rep = match cs.get(i) {
                Some('*') => Rep::Star,
                Some('+') => Rep::Plus,
                Some('?') => Rep::Opt,
                _ => Rep::One,
            };
            if rep != Rep::One {
                i += 1;
            }
            atoms.push((atom, rep));
        }
        Ok(Regex { atoms, start, end })
    }

    /// Whether the pattern matches somewhere in `s`.
    pub fn is_match(&self, s: &str) -> bool {
        let cs: Vec<char> = s.chars().collect();
        let last = if self.start { 0 } else { cs.len() };
        (0..=last).any(|at| self.match_here(0, &cs[at..]))
    }

    fn match_here(&self, k: usize, s: &[char]) -> bool {
        let Some((atom, rep)) = self.atoms.get(k) else {
            return !self.end || s.is_empty();
        };
        let (min, max) = match rep {
            Rep::One => (1, 1),
            Rep::Star => (0, usize::MAX),
            Rep::Plus => (1, usize::MAX),
            Rep::Opt => (0, 1),
        };
        let mut n = 0;
        while n < max && n < s.len() && atom.matches(s[n]) {
            n += 1;
        }
        (min..=n)
            .rev()
            .any(|take| self.match_here(k + 1, &s[take..]))
    }
}

fn class(cs: &[char], mut i: usize) -> Result<(Atom, usize), String> {
    let neg = cs.get(i) == Some(&'^');
    if neg {
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    while let Some(&c) = cs.get(i) {
        if c == ']' && !first {
            return Ok((Atom::Class(neg, ranges), i + 1));
        }
        first = false;
        if cs.get(i + 1) == Some(&'-') && cs.get(i + 2).is_some_and(|&e| e != ']') {
            ranges.push((c, cs[i + 2]));
            i += 3;
        } else {
            ranges.push((c, c));
            i += 1;
        }
    }
    Err("unterminated [ in pattern".into())
}

/// Writes `lvm.conf` with `global/locking_type` set (lvmconf): the line is
/// replaced in place when present (comments and layout kept), else a
/// `global` section is appended.
pub fn set_locking_type(file: &Path, locking_type: i64) -> std::io::Result<()> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let mut out = String::new();
    let mut replaced = false;
    for line in text.lines() {
        let t = line.trim_start();
        if !replaced && t.starts_with("locking_type") && t[12..].trim_start().starts_with('=') {
            let indent = &line[..line.len() - t.len()];
            out.push_str(&format!("{indent}locking_type = {locking_type}\n"));
            replaced = true;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !replaced {
        out.push_str(&format!("global {{\n\tlocking_type = {locking_type}\n}}\n"));
    }
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = file.with_extension("conf.tmp");
    std::fs::write(&tmp, out)?;
    std::fs::rename(tmp, file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_as_lvm2_writes_them() {
        let f = Filter::new(&["a|^/dev/loop[0-3]$|".into(), "r|.*|".into()]).unwrap();
        assert!(f.accepts("/dev/loop2"));
        assert!(!f.accepts("/dev/loop4"));
        assert!(!f.accepts("/dev/loop22"));
        let f = Filter::new(&["r|/dev/sd.*|".into()]).unwrap();
        assert!(!f.accepts("/dev/sda1"));
        assert!(f.accepts("/dev/vda"));
        assert!(Filter::new(&["x|a|".into()]).is_err());
    }

    #[test]
    fn regex_subset() {
        let r = Regex::new("^/tmp/x[^/]+\\.img$").unwrap();
        assert!(r.is_match("/tmp/xa.img"));
        assert!(!r.is_match("/tmp/x.img"));
        assert!(!r.is_match("/tmp/xa/b.img"));
        assert!(Regex::new("loop?").unwrap().is_match("/dev/loo"));
    }

    #[test]
    fn locking_type_edit_keeps_the_rest() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("lvm.conf");
        std::fs::write(&f, "# c\nglobal {\n    locking_type = 1\n    x = 2\n}\n").unwrap();
        set_locking_type(&f, 3).unwrap();
        let t = std::fs::read_to_string(&f).unwrap();
        assert!(t.contains("# c\n") && t.contains("    locking_type = 3\n"));
        assert_eq!(
            config::parse(&t).unwrap().int("global/locking_type"),
            Some(3)
        );
        let g = d.path().join("new/lvm.conf");
        set_locking_type(&g, 3).unwrap();
        assert_eq!(
            config::parse(&std::fs::read_to_string(&g).unwrap())
                .unwrap()
                .int("global/locking_type"),
            Some(3)
        );
    }
}
