//! Command lines as lvm2 takes them: short options that may be glued to
//! their value (`-L2G`, `-an`), long ones with `=` or a separate value,
//! positional names anywhere.

/// Options that take a value (both spellings).
const WITH_VALUE: &[&str] = &[
    "-L",
    "--size",
    "-l",
    "--extents",
    "-n",
    "--name",
    "-a",
    "--activate",
    "-c",
    "--clustered",
    "-Z",
    "--zero",
    "-s",
    "--physicalextentsize",
    "--units",
    "--separator",
    "-o",
    "--options",
    "-O",
    "--sort",
    "--config",
    "--driverloaded",
    "-W",
    "--wipesignatures",
    "--metadatasize",
    "--dataalignment",
    "-u",
    "--uuid",
    "--type",
    "-p",
    "--permission",
    "-S",
    "--select",
    "--file",
    "--norestorefile",
    "--reportformat",
    "-M",
    "--persistent",
    "--addtag",
    "--deltag",
    "-r",
    "--readahead",
    "-C",
    "--contiguous",
    "--alloc",
    "--pvmetadatacopies",
    "--vgmetadatacopies",
    "--metadatacopies",
    "--labelsector",
    "-x",
    "--resizeable",
    "--setphysicalvolumesize",
];

/// A parsed command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Args {
    /// Options in order, with their values.
    pub opts: Vec<(String, Option<String>)>,
    /// Positional arguments.
    pub pos: Vec<String>,
}

impl Args {
    /// Parses the arguments after the command name.
    pub fn parse(argv: &[String]) -> Result<Args, String> {
        let mut a = Args::default();
        let mut i = 0;
        while i < argv.len() {
            let s = &argv[i];
            i += 1;
            if s == "--" {
                a.pos.extend(argv[i..].iter().cloned());
                break;
            }
            if let Some(long) = s.strip_prefix("--") {
                let (name, inline) = match long.split_once('=') {
                    Some((n, v)) => (format!("--{n}"), Some(v.to_string())),
                    None => (s.clone(), None),
                };
                let value = if WITH_VALUE.contains(&name.as_str()) {
                    match inline {
                        Some(v) => Some(v),
                        None => Some(
                            argv.get(i)
                                .cloned()
                                .ok_or(format!("Option {name} requires an argument"))?,
                        ),
                    }
                } else {
                    inline
                };
                if value.is_some()
                    && WITH_VALUE.contains(&name.as_str())
                    && s.split_once('=').is_none()
                {
                    i += 1;
                }
                a.opts.push((name, value));
            } else if s.len() > 1
                && s.starts_with('-')
                && !s[1..].starts_with(|c: char| c.is_ascii_digit())
            {
                a.parse_short(s, argv, &mut i)?;
            } else {
                a.pos.push(s.clone());
            }
        }
        Ok(a)
    }

    fn parse_short(&mut self, s: &str, argv: &[String], i: &mut usize) -> Result<(), String> {
        let cs: Vec<char> = s[1..].chars().collect();
        let mut k = 0;
        while k < cs.len() {
            let name = format!("-{}", cs[k]);
            k += 1;
            if WITH_VALUE.contains(&name.as_str()) {
                let rest: String = cs[k..].iter().collect();
                let v = if !rest.is_empty() {
                    rest
                } else {
                    let v = argv
                        .get(*i)
                        .cloned()
                        .ok_or(format!("Option {name} requires an argument"))?;
                    *i += 1;
                    v
                };
                self.opts.push((name, Some(v)));
                return Ok(());
            }
            self.opts.push((name, None));
        }
        Ok(())
    }

    /// The last value of any of `names`.
    pub fn value(&self, names: &[&str]) -> Option<&str> {
        self.opts
            .iter()
            .rev()
            .find(|(n, _)| names.contains(&n.as_str()))
            .and_then(|(_, v)| v.as_deref())
    }

    /// Every value of any of `names`, in order.
    pub fn values(&self, names: &[&str]) -> Vec<String> {
        self.opts
            .iter()
            .filter(|(n, _)| names.contains(&n.as_str()))
            .filter_map(|(_, v)| v.clone())
            .collect()
    }

    /// Whether any of `names` was given.
    pub fn has(&self, names: &[&str]) -> bool {
        self.opts.iter().any(|(n, _)| names.contains(&n.as_str()))
    }

    /// How many times any of `names` was given (`-ff`, `-vv`).
    pub fn count(&self, names: &[&str]) -> usize {
        self.opts
            .iter()
            .filter(|(n, _)| names.contains(&n.as_str()))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Args {
        Args::parse(&s.split_whitespace().map(String::from).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn lvm2_spellings() {
        let a = p("-L2G -n webvg_lv1 webvg");
        assert_eq!(a.value(&["-L", "--size"]), Some("2G"));
        assert_eq!(a.value(&["-n", "--name"]), Some("webvg_lv1"));
        assert_eq!(a.pos, vec!["webvg"]);
        let a = p("-an -Zn --driverloaded n --config=devices/dir=\"/x\" vg -ff");
        assert_eq!(a.value(&["-a"]), Some("n"));
        assert_eq!(a.value(&["--driverloaded"]), Some("n"));
        assert_eq!(a.value(&["--config"]), Some("devices/dir=\"/x\""));
        assert_eq!(a.count(&["-f"]), 2);
        assert_eq!(a.pos, vec!["vg"]);
        let a = p("-cy --noheadings -o +devices vg");
        assert_eq!(a.value(&["-c"]), Some("y"));
        assert!(a.has(&["--noheadings"]));
        assert_eq!(a.value(&["-o"]), Some("+devices"));
    }
}
