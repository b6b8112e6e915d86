//! cluster.conf as luci edits it: validation (every error with its line),
//! the next version's text, a line diff against the running file, the
//! failover-domain form, and the version history kept in
//! `STATE_DIR/history/` (`vN.xml`, and `log` with one line a version:
//! `N<TAB>ms<TAB>user<TAB>summary`).

use std::io::Write;
use std::path::{Path, PathBuf};

use cman::config::{parse_xml, ClusterConf, Element};

/// A file that cannot be applied: the line it is about and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {msg}")]
pub struct Invalid {
    /// 1-based line (0 when the problem is not at one line).
    pub line: u32,
    /// What is wrong.
    pub msg: String,
}

impl Invalid {
    fn new(line: u32, msg: impl Into<String>) -> Invalid {
        Invalid {
            line,
            msg: msg.into(),
        }
    }
}

/// Checks `text` as cmand and rgmanager will: the cluster part, then `<rm>`.
pub fn validate(text: &str) -> Result<ClusterConf, Invalid> {
    let conf = ClusterConf::parse(text).map_err(|e| Invalid::new(e.line, e.msg))?;
    rgmanager::config::parse(text).map_err(|e| Invalid::new(e.line, e.msg))?;
    Ok(conf)
}

/// `text` with its root's `config_version` set to `version`, the rest of
/// the text untouched (the attribute is added if missing).
pub fn with_version(text: &str, version: u64) -> Result<String, Invalid> {
    let doc = roxmltree::Document::parse(text)
        .map_err(|e| Invalid::new(e.pos().row, format!("not well-formed XML: {e}")))?;
    let root = doc.root_element();
    let v = version.to_string();
    if let Some(a) = root.attributes().find(|a| a.name() == "config_version") {
        let r = a.range_value();
        return Ok(format!("{}{v}{}", &text[..r.start], &text[r.end..]));
    }
    // After `<cluster`.
    let at = root.range().start + 1 + root.tag_name().name().len();
    Ok(format!(
        "{} config_version=\"{v}\"{}",
        &text[..at],
        &text[at..]
    ))
}

/// One line of a diff.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiffLine {
    /// In both.
    Same(String),
    /// Only in the old file.
    Removed(String),
    /// Only in the new one.
    Added(String),
}

/// Most lines of a file that [`diff`] compares line by line (the table is
/// old × new); larger files are shown as wholly replaced.
pub const DIFF_MAX_LINES: usize = 4000;

/// The longest-common-subsequence line diff of two texts.
pub fn diff(old: &str, new: &str) -> Vec<DiffLine> {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    if a.len() > DIFF_MAX_LINES || b.len() > DIFF_MAX_LINES {
        let mut out: Vec<DiffLine> = a.iter().map(|l| DiffLine::Removed(l.to_string())).collect();
        out.extend(b.iter().map(|l| DiffLine::Added(l.to_string())));
        return out;
    }
    // lcs[i][j]: longest common subsequence of a[i..] and b[j..].
    let w = b.len() + 1;
    let mut lcs = vec![0u32; (a.len() + 1) * w];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i * w + j] = if a[i] == b[j] {
                lcs[(i + 1) * w + j + 1] + 1
            } else {
                lcs[(i + 1) * w + j].max(lcs[i * w + j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push(DiffLine::Same(a[i].to_string()));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[(i + 1) * w + j] >= lcs[i * w + j + 1]) {
            out.push(DiffLine::Removed(a[i].to_string()));
            i += 1;
        } else {
            out.push(DiffLine::Added(b[j].to_string()));
            j += 1;
        }
    }
    out
}

/// What the failover-domain form sends.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DomainForm {
    /// Domain name (a new name adds a domain).
    pub name: String,
    /// `ordered`.
    pub ordered: bool,
    /// `restricted`.
    pub restricted: bool,
    /// `nofailback`.
    pub nofailback: bool,
    /// (node, priority) of the domain's members, in form order.
    pub nodes: Vec<(String, u32)>,
}

fn flag(v: bool) -> &'static str {
    if v {
        "1"
    } else {
        "0"
    }
}

/// The text with failover domain `f.name` replaced (or added) as the form
/// says; with `delete`, removed. The document is written anew from its
/// element tree (comments are not kept).
pub fn edit_domain(text: &str, f: &DomainForm, delete: bool) -> Result<String, Invalid> {
    let mut root = parse_xml(text).map_err(|e| Invalid::new(e.line, e.msg))?;
    if f.name.trim().is_empty() {
        return Err(Invalid::new(0, "the failover domain has no name"));
    }
    let rm = child_or_add(&mut root, "rm");
    let fds = child_or_add(rm, "failoverdomains");
    let pos = fds
        .children
        .iter()
        .position(|c| c.name == "failoverdomain" && c.attr("name") == Some(&f.name));
    if delete {
        let Some(p) = pos else {
            return Err(Invalid::new(0, format!("no failover domain {}", f.name)));
        };
        fds.children.remove(p);
        return Ok(root.to_document());
    }
    let mut d = Element::new("failoverdomain")
        .with_attr("name", &f.name)
        .with_attr("ordered", flag(f.ordered))
        .with_attr("restricted", flag(f.restricted))
        .with_attr("nofailback", flag(f.nofailback));
    for (node, prio) in &f.nodes {
        d.children.push(
            Element::new("failoverdomainnode")
                .with_attr("name", node)
                .with_attr("priority", &prio.to_string()),
        );
    }
    match pos {
        Some(p) => fds.children[p] = d,
        None => fds.children.push(d),
    }
    Ok(root.to_document())
}

fn child_or_add<'a>(el: &'a mut Element, name: &str) -> &'a mut Element {
    let i = match el.children.iter().position(|c| c.name == name) {
        Some(i) => i,
        None => {
            el.children.push(Element::new(name));
            el.children.len() - 1
        }
    };
    &mut el.children[i]
}

/// The parts of cluster.conf that the element form edits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    /// `<clusternodes>` children.
    Node,
    /// `<fencedevices>` children.
    FenceDevice,
    /// `<rm><resources>` children.
    Resource,
    /// `<rm>`'s `<service>` elements.
    Service,
}

impl Section {
    /// Every section, in page order.
    pub const ALL: [Section; 4] = [
        Section::Node,
        Section::FenceDevice,
        Section::Resource,
        Section::Service,
    ];

    /// The form's word.
    pub fn as_str(self) -> &'static str {
        match self {
            Section::Node => "node",
            Section::FenceDevice => "fencedevice",
            Section::Resource => "resource",
            Section::Service => "service",
        }
    }

    /// From the form's word.
    pub fn parse(s: &str) -> Option<Section> {
        Section::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// The heading on the page.
    pub fn title(self) -> &'static str {
        match self {
            Section::Node => "Nodes",
            Section::FenceDevice => "Fence devices",
            Section::Resource => "Resources",
            Section::Service => "Services",
        }
    }

    fn list(self, root: &mut Element) -> Option<&mut Vec<Element>> {
        let el = match self {
            Section::Node => root.child_mut("clusternodes")?,
            Section::FenceDevice => root.child_mut("fencedevices")?,
            Section::Resource => root.child_mut("rm")?.child_mut("resources")?,
            Section::Service => root.child_mut("rm")?,
        };
        Some(&mut el.children)
    }

    fn takes(self, el: &Element) -> bool {
        match self {
            Section::Service => el.name == "service",
            _ => true,
        }
    }
}

/// One element as the form shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElementView {
    /// Its index among its parent's children.
    pub index: usize,
    /// Its tag.
    pub tag: String,
    /// Its attributes, in file order.
    pub attrs: Vec<(String, String)>,
}

/// The elements of a section.
pub fn elements(text: &str, section: Section) -> Vec<ElementView> {
    let Ok(mut root) = parse_xml(text) else {
        return Vec::new();
    };
    let Some(list) = section.list(&mut root) else {
        return Vec::new();
    };
    list.iter()
        .enumerate()
        .filter(|(_, e)| section.takes(e))
        .map(|(index, e)| ElementView {
            index,
            tag: e.name.clone(),
            attrs: e.attrs.clone(),
        })
        .collect()
}

/// The text with the attributes of element `index` of `section` set to
/// `attrs` (in that order; an empty value drops the attribute); its
/// children are kept. `tag` must still be that element's name.
pub fn edit_element(
    text: &str,
    section: Section,
    index: usize,
    tag: &str,
    attrs: &[(String, String)],
) -> Result<String, Invalid> {
    let mut root = parse_xml(text).map_err(|e| Invalid::new(e.line, e.msg))?;
    let gone = || {
        Invalid::new(
            0,
            format!("no <{tag}> at that place any more: reload the page"),
        )
    };
    let list = section.list(&mut root).ok_or_else(gone)?;
    let el = list
        .get_mut(index)
        .filter(|e| e.name == tag)
        .ok_or_else(gone)?;
    let valid_name = |k: &str| {
        !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    };
    if let Some((k, _)) = attrs.iter().find(|(k, _)| !valid_name(k)) {
        return Err(Invalid::new(0, format!("{k:?} is not an attribute name")));
    }
    el.attrs = attrs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .cloned()
        .collect();
    Ok(root.to_document())
}

/// One version in the history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    /// config_version.
    pub version: u64,
    /// When luci applied it (ms since the epoch).
    pub at_ms: u64,
    /// Who.
    pub user: String,
    /// What changed, in a few words.
    pub summary: String,
}

/// The history directory.
pub struct History {
    dir: PathBuf,
}

impl History {
    /// History kept in `dir` (made if missing).
    pub fn open(dir: &Path) -> std::io::Result<History> {
        std::fs::create_dir_all(dir)?;
        Ok(History {
            dir: dir.to_path_buf(),
        })
    }

    /// Every recorded version, newest first.
    pub fn list(&self) -> Vec<Version> {
        let text = std::fs::read_to_string(self.dir.join("log")).unwrap_or_default();
        let mut v: Vec<Version> = text
            .lines()
            .filter_map(|l| {
                let mut f = l.splitn(4, '\t');
                Some(Version {
                    version: f.next()?.parse().ok()?,
                    at_ms: f.next()?.parse().ok()?,
                    user: f.next()?.to_string(),
                    summary: f.next().unwrap_or("").to_string(),
                })
            })
            .collect();
        v.reverse();
        v
    }

    /// The text of a recorded version.
    pub fn text(&self, version: u64) -> Option<String> {
        std::fs::read_to_string(self.dir.join(format!("v{version}.xml"))).ok()
    }

    /// Records a version (its text and who made it); a version already
    /// kept is left alone.
    pub fn record(&self, v: &Version, text: &str) -> std::io::Result<()> {
        let path = self.dir.join(format!("v{}.xml", v.version));
        if path.exists() {
            return Ok(());
        }
        std::fs::write(&path, text)?;
        let clean = |s: &str| s.replace(['\t', '\n', '\r'], " ");
        let line = format!(
            "{}\t{}\t{}\t{}\n",
            v.version,
            v.at_ms,
            clean(&v.user),
            clean(&v.summary)
        );
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("log"))?
            .write_all(line.as_bytes())
    }
}

/// A few words on what changed between two files: the diff's counts.
pub fn summary(old: &str, new: &str) -> String {
    let d = diff(old, new);
    let added = d.iter().filter(|l| matches!(l, DiffLine::Added(_))).count();
    let removed = d
        .iter()
        .filter(|l| matches!(l, DiffLine::Removed(_)))
        .count();
    format!("+{added} -{removed} lines")
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONF: &str = r#"<?xml version="1.0"?>
<cluster name="c" config_version="3">
  <clusternodes>
    <clusternode name="n1" nodeid="1"/>
    <clusternode name="n2" nodeid="2"/>
  </clusternodes>
  <rm>
    <failoverdomains>
      <failoverdomain name="pref" ordered="1">
        <failoverdomainnode name="n1" priority="1"/>
      </failoverdomain>
    </failoverdomains>
  </rm>
</cluster>
"#;

    #[test]
    fn validation_names_the_line() {
        assert!(validate(CONF).is_ok());
        let bad = CONF.replace("nodeid=\"2\"", "nodeid=\"x\"");
        let e = validate(&bad).unwrap_err();
        assert_eq!(e.line, 5, "{e}");
        let broken = CONF.replace("</clusternodes>", "</clusternode>");
        assert_eq!(validate(&broken).unwrap_err().line, 6);
        let rm = CONF.replace("name=\"n1\" priority", "name=\"n9\" priority");
        let e = validate(&rm).unwrap_err();
        assert_eq!(e.line, 10, "{e}");
    }

    #[test]
    fn version_is_set_in_place() {
        let t = with_version(CONF, 4).unwrap();
        assert_eq!(
            t,
            CONF.replace("config_version=\"3\"", "config_version=\"4\"")
        );
        let none = CONF.replace(" config_version=\"3\"", "");
        let t = with_version(&none, 7).unwrap();
        assert!(
            t.contains("<cluster config_version=\"7\" name=\"c\">"),
            "{t}"
        );
    }

    #[test]
    fn diff_keeps_common_lines() {
        let d = diff("a\nb\nc\n", "a\nx\nc\nd\n");
        assert_eq!(
            d,
            vec![
                DiffLine::Same("a".into()),
                DiffLine::Removed("b".into()),
                DiffLine::Added("x".into()),
                DiffLine::Same("c".into()),
                DiffLine::Added("d".into()),
            ]
        );
        assert_eq!(summary("a\nb\n", "a\nc\nd\n"), "+2 -1 lines");
    }

    #[test]
    fn domain_form_replaces_adds_and_deletes() {
        let f = DomainForm {
            name: "pref".into(),
            ordered: true,
            restricted: true,
            nofailback: false,
            nodes: vec![("n2".into(), 1), ("n1".into(), 2)],
        };
        let t = edit_domain(CONF, &f, false).unwrap();
        let c = validate(&t).unwrap();
        let d = &c.rm.as_ref().unwrap().failover_domains[0];
        assert!(d.restricted && d.ordered);
        assert_eq!(d.nodes, vec![("n2".to_string(), 1), ("n1".to_string(), 2)]);
        let g = DomainForm {
            name: "other".into(),
            ..f.clone()
        };
        let t2 = edit_domain(&t, &g, false).unwrap();
        assert_eq!(validate(&t2).unwrap().rm.unwrap().failover_domains.len(), 2);
        let t3 = edit_domain(&t2, &f, true).unwrap();
        let doms = validate(&t3).unwrap().rm.unwrap().failover_domains;
        assert_eq!(doms.len(), 1);
        assert_eq!(doms[0].name, "other");
        assert!(edit_domain(&t3, &f, true).is_err());
    }

    #[test]
    fn element_form_sets_attributes_and_keeps_children() {
        let rm = CONF.replace(
            "  </rm>",
            "    <resources><script name=\"s\" file=\"/bin/true\"/></resources>\n    <service name=\"web\" domain=\"pref\"><script ref=\"s\"/></service>\n  </rm>",
        );
        let svcs = elements(&rm, Section::Service);
        assert_eq!(svcs.len(), 1);
        let ElementView {
            index: i,
            tag,
            mut attrs,
        } = svcs[0].clone();
        assert_eq!(tag, "service");
        attrs.push(("recovery".into(), "relocate".into()));
        attrs.retain(|(k, _)| k != "domain");
        attrs.push(("domain".into(), String::new()));
        let t = edit_element(&rm, Section::Service, i, "service", &attrs).unwrap();
        let cfg = rgmanager::config::parse(&t).unwrap();
        let s = &cfg.services[0];
        assert_eq!(s.recovery, rgmanager::config::Recovery::Relocate);
        assert!(s.domain.is_none());
        assert_eq!(s.children.len(), 1, "children kept");
        let nodes = elements(&rm, Section::Node);
        assert_eq!(nodes.len(), 2);
        let bad = edit_element(&rm, Section::Node, nodes[1].index, "service", &[]);
        assert!(bad.is_err(), "another element at that place");
        let bad = edit_element(
            &rm,
            Section::Node,
            0,
            "clusternode",
            &[("a b".into(), "1".into())],
        );
        assert!(bad.is_err());
        assert_eq!(elements(&rm, Section::Resource).len(), 1);
        assert_eq!(elements(CONF, Section::FenceDevice).len(), 0);
    }

    #[test]
    fn history_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let h = History::open(d.path()).unwrap();
        for v in [3, 4] {
            let ver = Version {
                version: v,
                at_ms: 1000 * v,
                user: "alice".into(),
                summary: "tab\there".into(),
            };
            h.record(&ver, &format!("text {v}")).unwrap();
        }
        let l = h.list();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].version, 4);
        assert_eq!(l[0].summary, "tab here");
        assert_eq!(h.text(3).as_deref(), Some("text 3"));
    }
}
