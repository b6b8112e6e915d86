//! lvm2's config syntax (`lib/config/config.c`, libdm's `dm_config`): the
//! language of both `lvm.conf` and the text metadata.
//!
//! ```text
//! section { key = value  sub { ... } }
//! value: 12 | -3 | 1.5 | "string" | [ value, value, ... ]
//! # comments run to the end of the line
//! ```
//!
//! Keys may be paths (`devices/filter = [...]`, as `--config` takes them);
//! they are split into nested sections. The tree keeps its order.

use std::fmt::Write as _;

use thiserror::Error;

/// A value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// An integer.
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// A string.
    Str(String),
    /// A list of values.
    List(Vec<Value>),
}

/// A node of the tree: a value or a section.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// `key = value`
    Value(Value),
    /// `key { ... }`
    Section(Section),
}

/// A section: its entries in order (a key may repeat; the last one wins
/// for lookups, as lvm2's merge does).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Section {
    /// Entries in file order.
    pub entries: Vec<(String, Node)>,
}

/// A syntax error, with its line.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("parse error at line {line}: {what}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What was expected.
    pub what: String,
}

/// Most nesting the parser follows (the metadata needs 4).
const MAX_DEPTH: usize = 32;

struct Parser<'a> {
    s: &'a [u8],
    at: usize,
    line: usize,
}

impl<'a> Parser<'a> {
    fn err<T>(&self, what: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError {
            line: self.line,
            what: what.into(),
        })
    }

    fn skip_ws(&mut self) {
        while let Some(&c) = self.s.get(self.at) {
            match c {
                b'\n' => {
                    self.line += 1;
                    self.at += 1;
                }
                b'#' => {
                    while self.s.get(self.at).is_some_and(|&c| c != b'\n') {
                        self.at += 1;
                    }
                }
                c if c.is_ascii_whitespace() || c == 0 => self.at += 1,
                _ => break,
            }
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.s.get(self.at).copied()
    }

    fn ident(&mut self) -> Result<String, ParseError> {
        self.skip_ws();
        let start = self.at;
        while self.s.get(self.at).is_some_and(|&c| is_ident_char(c)) {
            self.at += 1;
        }
        if start == self.at {
            return self.err("a key");
        }
        Ok(String::from_utf8_lossy(&self.s[start..self.at]).into_owned())
    }

    fn section(&mut self, depth: usize, top: bool) -> Result<Section, ParseError> {
        if depth > MAX_DEPTH {
            return self.err("nesting too deep");
        }
        let mut sec = Section::default();
        loop {
            match self.peek() {
                None if top => return Ok(sec),
                None => return self.err("'}'"),
                Some(b'}') if !top => {
                    self.at += 1;
                    return Ok(sec);
                }
                Some(_) => {
                    let key = self.ident()?;
                    let node = match self.peek() {
                        Some(b'{') => {
                            self.at += 1;
                            Node::Section(self.section(depth + 1, false)?)
                        }
                        Some(b'=') => {
                            self.at += 1;
                            Node::Value(self.value(depth)?)
                        }
                        _ => return self.err(format!("'=' or '{{' after {key}")),
                    };
                    sec.insert_path(&key, node);
                }
            }
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, ParseError> {
        match self.peek() {
            Some(b'[') => {
                self.at += 1;
                self.list(depth)
            }
            Some(q @ (b'"' | b'\'')) => {
                self.at += 1;
                self.string(q)
            }
            Some(c) if c == b'-' || c == b'+' || c.is_ascii_digit() || c == b'.' => self.number(),
            _ => self.err("a value"),
        }
    }

    fn list(&mut self, depth: usize) -> Result<Value, ParseError> {
        if depth > MAX_DEPTH {
            return self.err("nesting too deep");
        }
        let mut items = Vec::new();
        loop {
            match self.peek() {
                Some(b']') => {
                    self.at += 1;
                    return Ok(Value::List(items));
                }
                Some(b',') if !items.is_empty() => self.at += 1,
                Some(_) => items.push(self.value(depth + 1)?),
                None => return self.err("']'"),
            }
        }
    }

    fn string(&mut self, quote: u8) -> Result<Value, ParseError> {
        let mut out = Vec::new();
        loop {
            match self.s.get(self.at).copied() {
                None => return self.err("end of string"),
                Some(c) if c == quote => {
                    self.at += 1;
                    return Ok(Value::Str(String::from_utf8_lossy(&out).into_owned()));
                }
                Some(b'\\') if self.s.get(self.at + 1).is_some() => {
                    out.push(self.s[self.at + 1]);
                    self.at += 2;
                }
                Some(c) => {
                    if c == b'\n' {
                        self.line += 1;
                    }
                    out.push(c);
                    self.at += 1;
                }
            }
        }
    }

    fn number(&mut self) -> Result<Value, ParseError> {
        let start = self.at;
        while self
            .s
            .get(self.at)
            .is_some_and(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'+' | b'.'))
        {
            self.at += 1;
        }
        let t = std::str::from_utf8(&self.s[start..self.at]).unwrap_or("");
        if let Ok(i) = t.parse::<i64>() {
            return Ok(Value::Int(i));
        }
        if let Some(h) = t.strip_prefix("0x") {
            if let Ok(i) = i64::from_str_radix(h, 16) {
                return Ok(Value::Int(i));
            }
        }
        match t.parse::<f64>() {
            Ok(f) => Ok(Value::Float(f)),
            Err(_) => self.err(format!("a number, not {t:?}")),
        }
    }
}

fn is_ident_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b'/' | b'+' | b'#' | b'@')
}

/// Parses a whole text into its top-level section.
pub fn parse(text: &str) -> Result<Section, ParseError> {
    let mut p = Parser {
        s: text.as_bytes(),
        at: 0,
        line: 1,
    };
    p.section(0, true)
}

impl Section {
    /// Inserts `node` at a `/`-separated path, creating sections on the way.
    pub fn insert_path(&mut self, path: &str, node: Node) {
        match path.split_once('/') {
            None => self.entries.push((path.to_string(), node)),
            Some((head, rest)) => {
                let mut sub = Section::default();
                sub.insert_path(rest, node);
                self.entries.push((head.to_string(), Node::Section(sub)));
            }
        }
    }

    /// The last entry named `key` directly in this section.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entries
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, n)| n)
    }

    /// The node at a `/` path; a section repeated (as `--config` adds one)
    /// is searched last-first.
    pub fn find(&self, path: &str) -> Option<&Node> {
        let (head, rest) = match path.split_once('/') {
            None => return self.get(path),
            Some(x) => x,
        };
        self.entries
            .iter()
            .rev()
            .filter(|(k, _)| k == head)
            .find_map(|(_, n)| match n {
                Node::Section(s) => s.find(rest),
                Node::Value(_) => None,
            })
    }

    /// The value at `path`.
    pub fn value(&self, path: &str) -> Option<&Value> {
        match self.find(path)? {
            Node::Value(v) => Some(v),
            Node::Section(_) => None,
        }
    }

    /// The section named `key` (the last one).
    pub fn section(&self, key: &str) -> Option<&Section> {
        match self.find(key)? {
            Node::Section(s) => Some(s),
            Node::Value(_) => None,
        }
    }

    /// An integer at `path`.
    pub fn int(&self, path: &str) -> Option<i64> {
        match self.value(path)? {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// A string at `path`.
    pub fn str(&self, path: &str) -> Option<&str> {
        match self.value(path)? {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A list of strings at `path` (a single string counts as a list of one).
    pub fn strs(&self, path: &str) -> Option<Vec<String>> {
        match self.value(path)? {
            Value::Str(s) => Some(vec![s.clone()]),
            Value::List(l) => Some(
                l.iter()
                    .filter_map(|v| match v {
                        Value::Str(s) => Some(s.clone()),
                        _ => None,
                    })
                    .collect(),
            ),
            _ => None,
        }
    }

    /// Appends every entry of `other` (later entries win on lookup).
    pub fn merge(&mut self, other: Section) {
        self.entries.extend(other.entries);
    }

    /// Sets `key` in this section: replaces the last entry of that name or
    /// appends one.
    pub fn set(&mut self, key: &str, node: Node) {
        match self.entries.iter_mut().rev().find(|(k, _)| k == key) {
            Some(e) => e.1 = node,
            None => self.entries.push((key.to_string(), node)),
        }
    }
}

/// Quotes a string as lvm2 does: `"` and `\` escaped.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Prints a value on one line.
pub fn print_value(v: &Value) -> String {
    match v {
        Value::Int(i) => i.to_string(),
        Value::Float(f) => format!("{f:?}"),
        Value::Str(s) => quote(s),
        Value::List(l) => {
            let items: Vec<String> = l.iter().map(print_value).collect();
            format!("[{}]", items.join(", "))
        }
    }
}

/// Prints a tree with tab indentation (the layout of lvm.conf and
/// metadata backups).
pub fn print(sec: &Section) -> String {
    let mut out = String::new();
    print_into(&mut out, sec, 0);
    out
}

fn print_into(out: &mut String, sec: &Section, depth: usize) {
    let tabs = "\t".repeat(depth);
    for (k, n) in &sec.entries {
        match n {
            Node::Value(v) => {
                let _ = writeln!(out, "{tabs}{k} = {}", print_value(v));
            }
            Node::Section(s) => {
                let _ = writeln!(out, "{tabs}{k} {{");
                print_into(out, s, depth + 1);
                let _ = writeln!(out, "{tabs}}}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_metadata_shapes() {
        let t = "vg {\nid = \"a-b\"\nseqno = 2\nstatus = [\"READ\", \"WRITE\"]\nflags = []\n\
                 pvs {\npv0 {\nstripes = [\n\"pv0\", 0\n]\n}\n}\n}\n# c\ncontents = \"x\" # y\nversion = 1\n";
        let s = parse(t).unwrap();
        assert_eq!(s.int("vg/seqno"), Some(2));
        assert_eq!(s.strs("vg/status").unwrap(), vec!["READ", "WRITE"]);
        assert_eq!(
            s.value("vg/pvs/pv0/stripes"),
            Some(&Value::List(vec![Value::Str("pv0".into()), Value::Int(0)]))
        );
        assert_eq!(s.int("version"), Some(1));
    }

    #[test]
    fn paths_and_overrides() {
        let mut s = parse("devices { filter = [\"a|.*|\"] dir = \"/dev\" }").unwrap();
        s.merge(parse("devices/filter = [\"r|.*|\"]").unwrap());
        assert_eq!(s.strs("devices/filter").unwrap(), vec!["r|.*|"]);
        assert_eq!(s.str("devices/dir"), Some("/dev"));
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse("a {\n b = \n}").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(parse("a { b = \"x }").is_err());
        assert!(parse(&"a{".repeat(100)).is_err());
    }

    fn value_strategy() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<i64>().prop_map(Value::Int),
            "[ -~]{0,12}".prop_map(Value::Str),
        ];
        leaf.prop_recursive(2, 12, 4, |inner| {
            proptest::collection::vec(inner, 0..4).prop_map(Value::List)
        })
    }

    proptest! {
        #[test]
        fn print_then_parse_is_identity(
            entries in proptest::collection::vec(("[a-z_][a-z0-9_]{0,6}", value_strategy()), 0..6)
        ) {
            let mut s = Section::default();
            let mut inner = Section::default();
            for (k, v) in entries {
                inner.entries.push((k.clone(), Node::Value(v.clone())));
                s.entries.push((k, Node::Value(v)));
            }
            s.entries.push(("sub".into(), Node::Section(inner)));
            prop_assert_eq!(parse(&print(&s)).unwrap(), s);
        }

        #[test]
        fn parser_never_panics(t in "[ -~\n]{0,80}") {
            let _ = parse(&t);
        }
    }
}
