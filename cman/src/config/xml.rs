//! A small owned XML element tree, read with roxmltree under limits and
//! written back for the editing commands (`ccs_tool addnode` ...).

use super::ConfigError;

/// Biggest cluster.conf we read.
pub const MAX_FILE_BYTES: usize = 1 << 20;
/// Deepest element nesting we accept (cluster.conf needs about 8).
pub const MAX_DEPTH: usize = 32;
/// Longest attribute value we accept.
pub const MAX_ATTR_BYTES: usize = 4096;
/// Most XML nodes (elements, text, attributes) in one file.
pub const MAX_NODES: u32 = 50_000;

/// One element: name, attributes in file order, child elements, and the line
/// it starts on (1-based; 0 for elements made by the editing commands).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Element {
    /// Tag name.
    pub name: String,
    /// Attributes in file order.
    pub attrs: Vec<(String, String)>,
    /// Child elements (text and comments are dropped).
    pub children: Vec<Element>,
    /// Line of the start tag.
    pub line: u32,
}

impl Element {
    /// A new element with no attributes or children.
    pub fn new(name: &str) -> Element {
        Element {
            name: name.to_string(),
            attrs: Vec::new(),
            children: Vec::new(),
            line: 0,
        }
    }

    /// Value of attribute `key`.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Sets (or adds) attribute `key`.
    pub fn set_attr(&mut self, key: &str, value: &str) {
        match self.attrs.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value.to_string(),
            None => self.attrs.push((key.to_string(), value.to_string())),
        }
    }

    /// Builder form of [`Element::set_attr`].
    pub fn with_attr(mut self, key: &str, value: &str) -> Element {
        self.set_attr(key, value);
        self
    }

    /// First child named `name`.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Mutable first child named `name`.
    pub fn child_mut(&mut self, name: &str) -> Option<&mut Element> {
        self.children.iter_mut().find(|c| c.name == name)
    }

    /// Children named `name`.
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// Writes the element as indented XML.
    pub fn write(&self, out: &mut String, indent: usize) {
        out.push_str(&"  ".repeat(indent));
        out.push('<');
        out.push_str(&self.name);
        for (k, v) in &self.attrs {
            out.push_str(&format!(" {}=\"{}\"", k, escape(v)));
        }
        if self.children.is_empty() {
            out.push_str("/>\n");
            return;
        }
        out.push_str(">\n");
        for c in &self.children {
            c.write(out, indent + 1);
        }
        out.push_str(&"  ".repeat(indent));
        out.push_str(&format!("</{}>\n", self.name));
    }

    /// The whole document, with an XML declaration.
    pub fn to_document(&self) -> String {
        let mut out = String::from("<?xml version=\"1.0\"?>\n");
        self.write(&mut out, 0);
        out
    }
}

fn escape(v: &str) -> String {
    v.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Parses `text` into an element tree, refusing DTDs (so no entity tricks),
/// over-deep nesting, huge attributes and huge files.
pub fn parse(text: &str) -> Result<Element, ConfigError> {
    if text.len() > MAX_FILE_BYTES {
        return Err(ConfigError::at(
            1,
            format!("file is {} bytes, limit {}", text.len(), MAX_FILE_BYTES),
        ));
    }
    let opts = roxmltree::ParsingOptions {
        allow_dtd: false,
        nodes_limit: MAX_NODES,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(text, opts)
        .map_err(|e| ConfigError::at(e.pos().row, format!("bad XML: {e}")))?;
    convert(&doc, doc.root_element(), 1)
}

fn convert(
    doc: &roxmltree::Document<'_>,
    node: roxmltree::Node<'_, '_>,
    depth: usize,
) -> Result<Element, ConfigError> {
    let line = doc.text_pos_at(node.range().start).row;
    if depth > MAX_DEPTH {
        return Err(ConfigError::at(
            line,
            format!("elements nested deeper than {MAX_DEPTH}"),
        ));
    }
    let mut el = Element::new(node.tag_name().name());
    el.line = line;
    for a in node.attributes() {
        if a.value().len() > MAX_ATTR_BYTES {
            return Err(ConfigError::at(
                line,
                format!(
                    "attribute {} of <{}> is longer than {} bytes",
                    a.name(),
                    el.name,
                    MAX_ATTR_BYTES
                ),
            ));
        }
        el.attrs.push((a.name().to_string(), a.value().to_string()));
    }
    for c in node.children().filter(|c| c.is_element()) {
        el.children.push(convert(doc, c, depth + 1)?);
    }
    Ok(el)
}
