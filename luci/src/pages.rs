//! The pages, rendered by the server as HTML. Live parts are separate
//! fragments ([`live`], [`plots`]) that the events stream sends again at
//! every reading.

use std::fmt::Write;

use crate::cluster::Snapshot;
use crate::conf::{DiffLine, Invalid, Version};
use crate::session::Session;
use crate::users::Role;
use crate::util::{clock, esc, utc};

/// Which tab is open.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    /// The cluster page.
    Cluster,
    /// cluster.conf.
    Config,
    /// Versions.
    History,
    /// Storage.
    Storage,
    /// The audit log.
    Audit,
}

/// A whole page around `body`.
pub fn layout(title: &str, s: Option<&Session>, tab: Option<Tab>, body: &str) -> String {
    let mut nav = String::new();
    if let Some(s) = s {
        let link = |t: Tab, href: &str, name: &str| {
            let cur = if tab == Some(t) { " class=\"cur\"" } else { "" };
            format!("<a href=\"{href}\"{cur}>{name}</a>")
        };
        let _ = write!(
            nav,
            "<nav>{}{}{}{}{}<span class=\"who\">{} ({})</span>\
             <form method=\"post\" action=\"/logout\" class=\"inline\">{}<button>Log out</button></form></nav>",
            link(Tab::Cluster, "/", "Cluster"),
            link(Tab::Config, "/config", "cluster.conf"),
            link(Tab::History, "/config/history", "History"),
            link(Tab::Storage, "/storage", "Storage"),
            link(Tab::Audit, "/audit", "Audit"),
            esc(&s.user),
            s.role.as_str(),
            csrf_field(s)
        );
    }
    let meta = s.map_or(String::new(), |s| {
        format!("<meta name=\"csrf\" content=\"{}\">", esc(&s.csrf))
    });
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">{meta}\
         <title>{} · luci</title><link rel=\"stylesheet\" href=\"/static/luci.css\">\
         <script src=\"/static/luci.js\" defer></script></head>\
         <body><header><h1>luci</h1>{nav}</header><main>{body}</main></body></html>\n",
        esc(title)
    )
}

/// "Data of NOW" for pages read when they are asked for.
fn read_now() -> String {
    let now = crate::util::now_ms();
    format!(
        "<p class=\"asof\">Data of {} ({} UTC)</p>",
        utc(now),
        clock(now)
    )
}

/// The hidden CSRF field of every form.
pub fn csrf_field(s: &Session) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(&s.csrf)
    )
}

/// The login page.
pub fn login(token: &str, error: Option<&str>) -> String {
    let err = error.map_or(String::new(), |e| {
        format!("<p class=\"error\" id=\"login-error\">{}</p>", esc(e))
    });
    layout(
        "Log in",
        None,
        None,
        &format!(
            "<h2>Log in</h2>{err}<form method=\"post\" action=\"/login\" id=\"login\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <label>User <input name=\"user\" id=\"user\" autocomplete=\"username\"></label>\
             <label>Password <input type=\"password\" name=\"password\" id=\"password\" \
             autocomplete=\"current-password\"></label><button id=\"login-button\">Log in</button></form>",
            esc(token)
        ),
    )
}

/// An error page: what was refused and why; nothing was changed.
pub fn error(s: Option<&Session>, title: &str, why: &str) -> String {
    layout(
        title,
        s,
        None,
        &format!(
            "<h2>{}</h2><p class=\"error\" id=\"error\">{}</p><p>Nothing was changed. \
             <a href=\"/\">Back to the cluster</a></p>",
            esc(title),
            esc(why)
        ),
    )
}

/// The cluster page: the live fragment and the plots, refreshed by the
/// events stream.
pub fn cluster(snap: &Snapshot, s: &Session) -> String {
    let body = format!(
        "<div id=\"msg\" class=\"msg\" hidden></div>\
         <p class=\"asof\">Data of <span id=\"asof\">{}</span> \
         <span id=\"conn\" class=\"conn\">live</span></p>\
         <div id=\"live\">{}</div><div id=\"plots\">{}</div>",
        as_of(snap),
        live(snap, s),
        plots(snap)
    );
    layout("Cluster", Some(s), Some(Tab::Cluster), &body)
}

/// The time of a snapshot's data, as every view shows it.
pub fn as_of(snap: &Snapshot) -> String {
    if snap.at_ms == 0 {
        "(not read yet)".into()
    } else {
        format!("{} ({} UTC)", utc(snap.at_ms), clock(snap.at_ms))
    }
}

fn node_state(code: &str) -> (&'static str, &'static str) {
    match code {
        "M" => ("Online", "online"),
        "d" => ("Offline, awaiting fence", "fencing"),
        "h" => ("Held (old processes run)", "held"),
        _ => ("Offline", "offline"),
    }
}

/// The live part of the cluster page.
pub fn live(snap: &Snapshot, s: &Session) -> String {
    let mut h = String::new();
    match &snap.cman {
        None => h.push_str("<p>Reading the cluster…</p>"),
        Some(Err(e)) => {
            let _ = write!(h, "<p class=\"error\">cmand: {}</p>", esc(e));
        }
        Some(Ok(st)) => {
            let q = &st.quorum;
            let _ = write!(
                h,
                "<section><h2>Cluster <span id=\"cluster-name\">{}</span></h2>\
                 <table class=\"kv\"><tr><th>Config version</th><td id=\"config-version\">{}</td></tr>\
                 <tr><th>Quorum</th><td id=\"quorum\">{} ({} of {} votes, {} needed{})</td></tr>\
                 <tr><th>View</th><td>{} (since {} ms)</td></tr>\
                 <tr><th>Fence domain</th><td>{}{}</td></tr></table></section>",
                esc(&st.cluster_name),
                st.config_version,
                if q.quorate { "Quorate" } else { "Not quorate" },
                q.total_votes,
                q.expected_votes,
                q.quorum,
                if q.flags.is_empty() {
                    String::new()
                } else {
                    format!(", {}", esc(&q.flags.join(" ")))
                },
                st.view,
                st.view_age_ms,
                esc(&fence_domain(st)),
                if st.victims.is_empty() {
                    String::new()
                } else {
                    format!("; waiting for fencing: {}", st.victims.len())
                },
            );
            h.push_str(&members(snap, st));
        }
    }
    h.push_str(&services(snap, s));
    h.push_str(&node_versions(snap));
    h.push_str(&events(snap));
    h
}

fn fence_domain(st: &cman::node::Status) -> String {
    let names: Vec<String> = st
        .fence_domain
        .iter()
        .map(|id| {
            st.nodes
                .iter()
                .find(|n| n.id == *id)
                .map_or_else(|| id.to_string(), |n| n.name.clone())
        })
        .collect();
    if names.is_empty() {
        "(empty)".into()
    } else {
        names.join(", ")
    }
}

fn members(snap: &Snapshot, st: &cman::node::Status) -> String {
    let mut h = String::from(
        "<section><h2>Members</h2><table id=\"members\"><tr><th>Node</th><th>Id</th>\
         <th>Votes</th><th>State</th><th>rgmanager</th><th>Services</th><th>Last fenced</th></tr>",
    );
    let rg = snap.services();
    for n in &st.nodes {
        let (state, class) = node_state(&n.status);
        let rgm = rg
            .and_then(|v| v.nodes.iter().find(|x| x.name == n.name))
            .map_or("", |x| match (x.rgmanager, x.rgmanager_master) {
                (true, true) => "running (master)",
                (true, false) => "running",
                _ => "",
            });
        let svcs: Vec<&str> = rg.map_or(Vec::new(), |v| {
            v.services
                .iter()
                .filter(|x| x.owner.as_deref() == Some(&n.name))
                .map(|x| x.name.as_str())
                .collect()
        });
        let fenced = n.last_fenced.as_ref().map_or(String::new(), |(ago, how)| {
            format!("{} s ago by {}", ago / 1000, how)
        });
        let _ = write!(
            h,
            "<tr id=\"node-{}\"><td><a href=\"/node/{}\">{}</a></td><td>{}</td><td>{}</td>\
             <td class=\"state state-{class}\">{state}</td><td>{rgm}</td><td>{}</td><td>{}</td></tr>",
            esc(&n.name),
            esc(&n.name),
            esc(&n.name),
            n.id,
            n.votes,
            esc(&svcs.join(", ")),
            esc(&fenced)
        );
    }
    h.push_str("</table></section>");
    h
}

/// The short name used in element ids (`service:web` -> `web`).
pub fn short(svc: &str) -> &str {
    svc.strip_prefix("service:").unwrap_or(svc)
}

fn services(snap: &Snapshot, s: &Session) -> String {
    let Some(rg) = &snap.rg else {
        return String::new();
    };
    let rg = match rg {
        Ok(v) => v,
        Err(e) => {
            return format!(
                "<section><h2>Services</h2><p class=\"error\">rgmanager: {}</p></section>",
                esc(e)
            )
        }
    };
    let admin = s.role == Role::Admin;
    let mut h = String::from(
        "<section><h2>Services</h2><table id=\"services\"><tr><th>Service</th><th>State</th>\
         <th>Owner</th><th>Last owner</th><th>Restarts</th><th>Failures seen</th><th>Actions</th></tr>",
    );
    for v in &rg.services {
        let id = esc(short(&v.name));
        let state = v.record.state.as_str();
        let frozen = if v.record.frozen { " (frozen)" } else { "" };
        let actions = if admin {
            actions(s, &v.name, v.record.frozen, &rg.nodes)
        } else {
            "<span class=\"ro\">read-only</span>".into()
        };
        let _ = write!(
            h,
            "<tr id=\"svc-{id}\"><td><a href=\"/service/{id}\">{}</a></td><td class=\"svc-state\">{state}{frozen}</td>\
             <td class=\"owner\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{actions}</td></tr>",
            esc(&v.name),
            esc(v.owner.as_deref().unwrap_or("none")),
            esc(v.last_owner.as_deref().unwrap_or("none")),
            v.record.restarts,
            snap.failures_of(&v.name),
        );
    }
    h.push_str("</table></section>");
    h
}

fn act_form(s: &Session, svc: &str, action: &str, label: &str, extra: &str) -> String {
    format!(
        "<form method=\"post\" action=\"/service/action\" class=\"act inline\">{}\
         <input type=\"hidden\" name=\"service\" value=\"{}\">\
         <input type=\"hidden\" name=\"action\" value=\"{action}\">{extra}\
         <button class=\"act-{action}\">{label}</button></form>",
        csrf_field(s),
        esc(svc)
    )
}

fn actions(s: &Session, svc: &str, frozen: bool, nodes: &[rgmanager::control::NodeView]) -> String {
    let mut h = String::new();
    for (a, l) in [
        ("enable", "Enable"),
        ("disable", "Disable"),
        ("restart", "Restart"),
    ] {
        h.push_str(&act_form(s, svc, a, l, ""));
    }
    h.push_str(&if frozen {
        act_form(s, svc, "unfreeze", "Unfreeze", "")
    } else {
        act_form(s, svc, "freeze", "Freeze", "")
    });
    let mut sel = String::from("<select name=\"node\" class=\"relocate-to\">");
    for n in nodes {
        let _ = write!(
            sel,
            "<option value=\"{0}\">{0}{1}</option>",
            esc(&n.name),
            if n.online { "" } else { " (offline)" }
        );
    }
    sel.push_str("</select>");
    h.push_str(&act_form(s, svc, "relocate", "Relocate to", &sel));
    h
}

fn node_versions(snap: &Snapshot) -> String {
    let mut h = String::from(
        "<section><h2>Configuration on each node</h2><table id=\"node-versions\">\
         <tr><th>State directory</th><th>Node</th><th>config_version</th></tr>",
    );
    for (i, n) in snap.nodes.iter().enumerate() {
        let (node, ver) = match &n.read {
            Ok((name, v)) => (esc(name), v.to_string()),
            Err(e) => (
                format!("<span class=\"error\">{}</span>", esc(e)),
                "-".into(),
            ),
        };
        let _ = write!(
            h,
            "<tr id=\"nodever-{i}\"><td>{}</td><td>{node}</td><td class=\"ver\">{ver}</td></tr>",
            esc(&n.state_dir.display().to_string())
        );
    }
    h.push_str("</table></section>");
    h
}

fn events(snap: &Snapshot) -> String {
    let mut h = String::from("<section><h2>Latest events</h2><ul id=\"events\">");
    if snap.events.is_empty() {
        h.push_str("<li>None since luci started.</li>");
    }
    for e in snap.events.iter().take(20) {
        let _ = write!(
            h,
            "<li class=\"ev-{}\"><time>{}</time> {}</li>",
            e.kind,
            clock(e.at_ms),
            esc(&e.text)
        );
    }
    h.push_str("</ul></section>");
    h
}

/// The plots over the last minutes, with membership events on each time
/// line: members and started services; the dlm users' lock requests per
/// second (local against remote); glock demotes per second; tgtd's IOPS
/// and MB/s. Each legend shows the latest value (`#now-...`).
pub fn plots(snap: &Snapshot) -> String {
    let now = snap.at_ms as f64;
    // The time kept, from one minute (a luci just started) to ten.
    let oldest = snap.samples.first().map_or(now, |s| s.at_ms as f64);
    let span_ms = (now - oldest).clamp(60_000.0, 600_000.0);
    let axis = TimeAxis { now, span_ms };
    let members: Vec<(u64, f64)> = snap
        .samples
        .iter()
        .map(|s| (s.at_ms, f64::from(s.members)))
        .collect();
    let started: Vec<(u64, f64)> = snap
        .samples
        .iter()
        .map(|s| (s.at_ms, f64::from(s.started)))
        .collect();
    let rate = |f: fn(&crate::metrics::Rate) -> f64| -> Vec<(u64, f64)> {
        snap.rates.iter().map(|r| (r.at_ms, f(r))).collect()
    };
    let mut h = String::new();
    h.push_str(&plot(
        snap,
        &axis,
        "members",
        "Membership and services",
        &[
            ("members", "members", "#26c", &members, 0),
            ("started", "services started", "#a3c", &started, 0),
        ],
    ));
    if let Some(c) = &snap.cman_counts {
        let _ = match c {
            Ok(c) => write!(
                h,
                "<p class=\"legend\" id=\"cman-counts\">cmand counted {} views, {} joins, \
                 {} losses, {} fencings; {} messages.</p>",
                c.views, c.joins, c.losses, c.fences, c.messages
            ),
            Err(e) => write!(
                h,
                "<p class=\"note\" id=\"cman-counts\">cmand's counters: {}</p>",
                esc(e)
            ),
        };
    }
    h.push_str(&plot(
        snap,
        &axis,
        "locks",
        "DLM lock requests per second",
        &[
            ("lock-local", "local", "#26c", &rate(|r| r.lock_local), 1),
            ("lock-remote", "remote", "#d60", &rate(|r| r.lock_remote), 1),
        ],
    ));
    h.push_str(&plot(
        snap,
        &axis,
        "demotes",
        "Glock demotes per second",
        &[("demotes", "demotes", "#a3c", &rate(|r| r.demotes), 1)],
    ));
    h.push_str(&plot(
        snap,
        &axis,
        "iscsi",
        "iSCSI (tgtd): IOPS",
        &[("iops", "IOPS", "#2a2", &rate(|r| r.iops), 1)],
    ));
    h.push_str(&plot(
        snap,
        &axis,
        "iscsi-mbps",
        "iSCSI (tgtd): MB/s",
        &[("mbps", "MB/s", "#c22", &rate(|r| r.mbps), 2)],
    ));
    if snap.rates.is_empty() {
        h.push_str(
            "<p class=\"note\">No counters read yet: luci samples the dlm users, tgtd \
             and cmand every second.</p>",
        );
    }
    h
}

/// The time axis every plot shares.
struct TimeAxis {
    now: f64,
    span_ms: f64,
}

impl TimeAxis {
    const W: f64 = 720.0;

    fn x(&self, t: u64) -> f64 {
        Self::W - (self.now - t as f64) / self.span_ms * Self::W
    }

    fn shows(&self, t: u64) -> bool {
        self.now - (t as f64) <= self.span_ms
    }

    fn label(&self) -> String {
        if self.span_ms >= 120_000.0 {
            format!("−{:.0} min", self.span_ms / 60_000.0)
        } else {
            format!("−{:.0} s", self.span_ms / 1000.0)
        }
    }
}

/// One series of a plot: id (for `#now-ID`), legend, colour, points,
/// decimals shown.
type Line<'a> = (&'a str, &'a str, &'a str, &'a [(u64, f64)], usize);

/// An SVG plot of `lines` over `axis`, membership events as ticks; the
/// legend gives each line's latest value.
fn plot(snap: &Snapshot, axis: &TimeAxis, id: &str, title: &str, lines: &[Line]) -> String {
    const H: f64 = 90.0;
    let w = TimeAxis::W;
    let shown = |pts: &'_ [(u64, f64)]| -> Vec<(u64, f64)> {
        pts.iter()
            .copied()
            .filter(|(t, _)| axis.shows(*t))
            .collect()
    };
    let max = lines
        .iter()
        .flat_map(|l| shown(l.3))
        .map(|(_, v)| v)
        .fold(0.0_f64, f64::max);
    let top = nice_ceiling(max);
    let y = |v: f64| H - 8.0 - v / top * (H - 22.0);
    let mut svg = String::new();
    for e in &snap.events {
        let color = match e.kind {
            "join" => "#2a2",
            "loss" => "#d22",
            "fence" => "#e80",
            _ => continue,
        };
        if !axis.shows(e.at_ms) {
            continue;
        }
        let _ = write!(
            svg,
            "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"0\" y2=\"{H}\" stroke=\"{color}\" stroke-dasharray=\"3 2\"><title>{1} {2}</title></line>",
            axis.x(e.at_ms),
            clock(e.at_ms),
            esc(&e.text)
        );
    }
    let mut legend = String::new();
    for (lid, name, color, pts, decimals) in lines {
        let mut p = String::new();
        for (t, v) in shown(pts) {
            let _ = write!(p, "{:.1},{:.1} ", axis.x(t), y(v));
        }
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{p}\"/>"
        );
        let last = pts.last().map_or(0.0, |(_, v)| *v);
        let _ = write!(
            legend,
            "<span class=\"k-{lid}\">■</span> {name} <b id=\"now-{lid}\">{last:.decimals$}</b> "
        );
    }
    format!(
        "<section><h2>{title}</h2>\
         <svg id=\"plot-{id}\" viewBox=\"0 0 {w} {H}\" width=\"{w}\" height=\"{H}\" role=\"img\">\
         <rect width=\"{w}\" height=\"{H}\" fill=\"#fafafa\" stroke=\"#ccc\"/>{svg}\
         <text x=\"4\" y=\"12\" font-size=\"11\">{}</text>\
         <text x=\"{}\" y=\"12\" font-size=\"11\">now</text>\
         <text x=\"64\" y=\"12\" font-size=\"11\">top {}</text></svg>\
         <p class=\"legend\">{legend}<span class=\"k-join\">┆</span> join \
         <span class=\"k-loss\">┆</span> loss <span class=\"k-fence\">┆</span> fence</p></section>",
        axis.label(),
        w - 24.0,
        fmt_top(top),
    )
}

/// The smallest of 1, 2, 5 × 10^k at or above `v` (at least 1).
fn nice_ceiling(v: f64) -> f64 {
    let mut top = 1.0;
    while top < v {
        for m in [2.0, 2.5, 2.0] {
            top *= m;
            if top >= v {
                break;
            }
        }
    }
    top
}

fn fmt_top(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.0}k", v / 1000.0)
    } else {
        format!("{v:.0}")
    }
}

/// The outcome of a service operation, as a page.
pub fn action_result(s: &Session, text: &str, ok: bool) -> String {
    layout(
        "Service operation",
        Some(s),
        Some(Tab::Cluster),
        &format!(
            "<h2>Service operation</h2><pre id=\"result\" class=\"{}\">{}</pre><p><a href=\"/\">Back to the cluster</a></p>",
            if ok { "ok" } else { "error" },
            esc(text)
        ),
    )
}

/// What the configuration page shows besides the editor.
#[derive(Default)]
pub struct ConfigView<'a> {
    /// The running text.
    pub running: &'a str,
    /// Its version.
    pub version: u64,
    /// The editor's text (the running text unless a submission failed).
    pub editing: &'a str,
    /// A validation error of the editor's text.
    pub error: Option<&'a Invalid>,
    /// A diff to show.
    pub diff: Option<&'a [DiffLine]>,
    /// A message (what was applied).
    pub message: Option<&'a str>,
    /// Configured node names (for the domain form).
    pub nodes: Vec<String>,
    /// The domains.
    pub domains: Vec<cman::config::FailoverDomain>,
}

fn element_forms(s: &Session, v: &ConfigView, dis: &str) -> String {
    use crate::conf::{elements, Section};
    let mut h = String::from(
        "<section><h3>Nodes, fence devices, resources and services</h3>\
         <p class=\"note\">Each element's attributes (an empty value removes one; the last row \
         adds one). Its children are kept; edit them in the raw XML.</p>",
    );
    for sec in Section::ALL {
        let _ = write!(h, "<h4>{}</h4>", sec.title());
        for e in elements(v.running, sec) {
            let (i, tag, attrs) = (e.index, e.tag, e.attrs);
            let label = attrs
                .iter()
                .find(|(k, _)| k == "name" || k == "address")
                .map_or(String::new(), |(_, v)| v.clone());
            let _ = write!(
                h,
                "<form method=\"post\" action=\"/config/element\" class=\"element\" \
                 id=\"el-{}-{i}\">{}<input type=\"hidden\" name=\"section\" value=\"{}\">\
                 <input type=\"hidden\" name=\"index\" value=\"{i}\">\
                 <input type=\"hidden\" name=\"tag\" value=\"{}\">\
                 <input type=\"hidden\" name=\"version\" value=\"{}\">\
                 <fieldset><legend>&lt;{}&gt; {}</legend>",
                sec.as_str(),
                csrf_field(s),
                sec.as_str(),
                esc(&tag),
                v.version,
                esc(&tag),
                esc(&label)
            );
            for (k, val) in &attrs {
                let _ = write!(
                    h,
                    "<label>{0} <input name=\"a:{0}\" value=\"{1}\"{dis}></label> ",
                    esc(k),
                    esc(val)
                );
            }
            let _ = write!(
                h,
                "<label>new <input name=\"newkey\" size=\"10\"{dis}></label>=\
                 <input name=\"newvalue\" size=\"12\"{dis}> \
                 <button{dis}>Save and apply</button></fieldset></form>"
            );
        }
    }
    h.push_str("</section>");
    h
}

/// The cluster.conf page.
pub fn config(s: &Session, v: &ConfigView) -> String {
    let mut h = format!(
        "<h2>cluster.conf</h2>{}<p>Running version <span id=\"running-version\">{}</span>; \
         applying makes version {} and cmand sends it to every node.</p>",
        read_now(),
        v.version,
        v.version + 1
    );
    if let Some(m) = v.message {
        let _ = write!(h, "<p class=\"ok\" id=\"conf-message\">{}</p>", esc(m));
    }
    if let Some(e) = v.error {
        let _ = write!(
            h,
            "<p class=\"error\" id=\"conf-error\">Not applied: {}</p>{}",
            esc(&e.to_string()),
            context(v.editing, e.line)
        );
    }
    if let Some(d) = v.diff {
        h.push_str(&diff(d, "Changes against the running version"));
    }
    let admin = s.role == Role::Admin;
    let dis = if admin { "" } else { " disabled" };
    let _ = write!(
        h,
        "<section><h3>Raw XML</h3><form method=\"post\" action=\"/config/apply\" id=\"raw-form\">{}\
         <textarea name=\"text\" id=\"conf-text\" rows=\"24\" cols=\"100\" spellcheck=\"false\"{dis}>{}</textarea><br>\
         <button name=\"op\" value=\"diff\" id=\"conf-diff\"{dis}>Show the diff</button> \
         <button name=\"op\" value=\"apply\" id=\"conf-apply\"{dis}>Validate and apply</button></form></section>",
        csrf_field(s),
        esc(v.editing)
    );
    h.push_str(&domains(s, v, dis));
    h.push_str(&element_forms(s, v, dis));
    layout("cluster.conf", Some(s), Some(Tab::Config), &h)
}

fn context(text: &str, line: u32) -> String {
    if line == 0 {
        return String::new();
    }
    let mut h = String::from("<pre class=\"context\">");
    let l = line as usize;
    for (i, t) in text.lines().enumerate() {
        let n = i + 1;
        if n + 3 < l || n > l + 3 {
            continue;
        }
        let mark = if n == l {
            " class=\"bad\" id=\"bad-line\""
        } else {
            ""
        };
        let _ = writeln!(h, "<span{mark}>{n:5}  {}</span>", esc(t));
    }
    h.push_str("</pre>");
    h
}

fn diff(d: &[DiffLine], title: &str) -> String {
    let mut h = format!(
        "<section><h3>{}</h3><pre class=\"diff\" id=\"diff\">",
        esc(title)
    );
    let changed = d.iter().any(|l| !matches!(l, DiffLine::Same(_)));
    if !changed {
        h.push_str("(no changes)");
    }
    for l in d {
        let _ = match l {
            DiffLine::Same(t) => writeln!(h, "  {}", esc(t)),
            DiffLine::Removed(t) => writeln!(h, "<del>- {}</del>", esc(t)),
            DiffLine::Added(t) => writeln!(h, "<ins>+ {}</ins>", esc(t)),
        };
    }
    h.push_str("</pre></section>");
    h
}

fn domains(s: &Session, v: &ConfigView, dis: &str) -> String {
    let mut h = String::from("<section><h3>Failover domains</h3>");
    let blank = cman::config::FailoverDomain {
        name: String::new(),
        ordered: false,
        restricted: false,
        nofailback: false,
        nodes: Vec::new(),
    };
    for d in v.domains.iter().chain(std::iter::once(&blank)) {
        let new = d.name.is_empty();
        let check = |name: &str, on: bool| {
            format!(
                "<label><input type=\"checkbox\" name=\"{name}\" value=\"1\"{}{dis}> {name}</label> ",
                if on { " checked" } else { "" }
            )
        };
        let id = if new { "new".to_string() } else { esc(&d.name) };
        let _ = write!(
            h,
            "<form method=\"post\" action=\"/config/domain\" class=\"domain\" id=\"domain-{id}\">{}\
             <fieldset><legend>{}</legend>",
            csrf_field(s),
            if new { "New domain".into() } else { esc(&d.name) }
        );
        if new {
            let _ = write!(
                h,
                "<label>Name <input name=\"name\" class=\"dname\"{dis}></label> "
            );
        } else {
            let _ = write!(
                h,
                "<input type=\"hidden\" name=\"name\" value=\"{}\">",
                esc(&d.name)
            );
        }
        h.push_str(&check("ordered", d.ordered));
        h.push_str(&check("restricted", d.restricted));
        h.push_str(&check("nofailback", d.nofailback));
        h.push_str("<table><tr><th>Node</th><th>Priority (blank: not in the domain)</th></tr>");
        for n in &v.nodes {
            let prio = d
                .nodes
                .iter()
                .find(|(x, _)| x == n)
                .map_or(String::new(), |(_, p)| p.to_string());
            let _ = write!(
                h,
                "<tr><td>{0}</td><td><input name=\"prio:{0}\" value=\"{prio}\" size=\"4\" class=\"prio\" data-node=\"{0}\"{dis}></td></tr>",
                esc(n)
            );
        }
        let _ = write!(
            h,
            "</table><button name=\"op\" value=\"save\" class=\"dsave\"{dis}>{}</button>",
            if new { "Add" } else { "Save and apply" }
        );
        if !new {
            let _ = write!(
                h,
                " <button name=\"op\" value=\"delete\"{dis}>Delete</button>"
            );
        }
        h.push_str("</fieldset></form>");
    }
    h.push_str("</section>");
    h
}

/// The history page.
pub fn history(
    s: &Session,
    running: u64,
    versions: &[Version],
    shown: Option<(u64, &[DiffLine])>,
) -> String {
    let mut h = format!(
        "<h2>Versions</h2>{}<p>Running: version <span id=\"running-version\">{running}</span>. \
         A rollback applies the old text as a new version.</p>\
         <table id=\"history\"><tr><th>Version</th><th>Applied</th><th>By</th><th>Change</th><th></th></tr>",
        read_now()
    );
    let admin = s.role == Role::Admin;
    for v in versions {
        let roll = if admin && v.version != running {
            format!(
                "<form method=\"post\" action=\"/config/rollback\" class=\"inline\">{}\
                 <input type=\"hidden\" name=\"version\" value=\"{}\"><button>Roll back to this</button></form>",
                csrf_field(s),
                v.version
            )
        } else {
            String::new()
        };
        let _ = write!(
            h,
            "<tr id=\"hist-{0}\"><td>{0}</td><td>{1}</td><td class=\"by\">{2}</td><td>{3}</td>\
             <td><a href=\"/config/history?show={0}\">diff with running</a> {roll}</td></tr>",
            v.version,
            utc(v.at_ms),
            esc(&v.user),
            esc(&v.summary)
        );
    }
    h.push_str("</table>");
    if let Some((ver, d)) = shown {
        h.push_str(&diff(
            d,
            &format!("Version {ver} against the running version"),
        ));
    }
    layout("History", Some(s), Some(Tab::History), &h)
}

/// The audit page.
pub fn audit(s: &Session, entries: &[crate::audit::Entry]) -> String {
    let mut h = format!(
        "<h2>Audit log</h2>{}<p>Every login, change and action, newest first (the file keeps them all).</p>\
         <table id=\"audit\"><tr><th>Time</th><th>User</th><th>What</th><th>Result</th></tr>",
        read_now()
    );
    for e in entries {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td><pre>{}</pre></td></tr>",
            utc(e.at_ms),
            esc(&e.user),
            esc(&e.what),
            esc(&e.result)
        );
    }
    h.push_str("</table>");
    layout("Audit", Some(s), Some(Tab::Audit), &h)
}

/// A node's page, if it is configured.
pub fn node(snap: &Snapshot, s: &Session, name: &str) -> Option<String> {
    let st = snap.status()?;
    let n = st.nodes.iter().find(|n| n.name == name)?;
    let (state, class) = node_state(&n.status);
    let mut h = format!(
        "<h2>Node {}</h2><p class=\"asof\">Data of {}</p><table class=\"kv\">\
         <tr><th>Id</th><td>{}</td></tr><tr><th>Votes</th><td>{}</td></tr>\
         <tr><th>State</th><td class=\"state state-{class}\">{state}</td></tr>\
         <tr><th>Incarnation</th><td>{}</td></tr><tr><th>In the view for</th><td>{}</td></tr>\
         <tr><th>Last fenced</th><td>{}</td></tr><tr><th>Held by</th><td>{}</td></tr></table>",
        esc(name),
        as_of(snap),
        n.id,
        n.votes,
        n.inc,
        n.joined_ms_ago
            .map_or("-".into(), |ms| format!("{} s", ms / 1000)),
        esc(&n
            .last_fenced
            .as_ref()
            .map_or("never".into(), |(ago, how)| format!(
                "{} s ago by {how}",
                ago / 1000
            ))),
        esc(&n.held.join(", ")),
    );
    h.push_str("<h3>Services here</h3><ul>");
    for v in snap.services().map_or(&[][..], |v| &v.services[..]) {
        if v.owner.as_deref() == Some(name) {
            let _ = write!(
                h,
                "<li><a href=\"/service/{}\">{}</a> {}</li>",
                esc(short(&v.name)),
                esc(&v.name),
                v.record.state.as_str()
            );
        }
    }
    h.push_str("</ul>");
    Some(layout(name, Some(s), Some(Tab::Cluster), &h))
}

/// A service's page, if it exists.
pub fn service(snap: &Snapshot, s: &Session, name: &str) -> Option<String> {
    let rg = snap.services()?;
    let full = rgmanager::config::full_name(name);
    let v = rg.services.iter().find(|x| x.name == full)?;
    let r = &v.record;
    let acts = if s.role == Role::Admin {
        actions(s, &v.name, r.frozen, &rg.nodes)
    } else {
        "<span class=\"ro\">read-only</span>".into()
    };
    let h = format!(
        "<div id=\"msg\" class=\"msg\" hidden></div><h2>{}</h2><p class=\"asof\">Data of {}</p><table class=\"kv\">\
         <tr><th>State</th><td>{}</td></tr><tr><th>Owner</th><td>{}</td></tr>\
         <tr><th>Last owner</th><td>{}</td></tr><tr><th>Restarts</th><td>{}</td></tr>\
         <tr><th>Failures seen by luci</th><td>{}</td></tr><tr><th>Frozen</th><td>{}</td></tr>\
         <tr><th>Last transition</th><td>{}</td></tr></table><p>{acts}</p>",
        esc(&v.name),
        as_of(snap),
        r.state.as_str(),
        esc(v.owner.as_deref().unwrap_or("none")),
        esc(v.last_owner.as_deref().unwrap_or("none")),
        r.restarts,
        snap.failures_of(&v.name),
        if r.frozen { "yes" } else { "no" },
        utc(v.last_transition * 1000),
    );
    Some(layout(&v.name, Some(s), Some(Tab::Cluster), &h))
}

/// What `tgtadm --op show --mode target` prints, through tgtd's control
/// socket: targets, their LUNs and backing stores, I_T nexuses (sessions)
/// and ACLs.
fn tgtd_targets(socket: &std::path::Path) -> Result<String, String> {
    use iscsi::target::mgmt::{Mode, Op, Request};
    let req = Request {
        mode: Some(Mode::Target),
        op: Some(Op::Show),
        ..Request::default()
    };
    let r = iscsi::target::driver::send_request(socket, &req)
        .map_err(|e| format!("tgtd at {}: {e}", socket.display()))?;
    if r.code != 0 {
        return Err(format!("tgtd: {}", r.message));
    }
    Ok(r.output)
}

/// `dlm_tool ls` of every process with a dlm control socket in `dir`:
/// (socket name, its answer or why not).
fn dlm_lockspaces(dir: &std::path::Path) -> Vec<(String, Result<String, String>)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut socks: Vec<std::path::PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sock"))
        .collect();
    socks.sort();
    socks
        .into_iter()
        .map(|s| {
            let name = s
                .file_name()
                .map_or(String::new(), |f| f.to_string_lossy().into_owned());
            (
                name,
                dlm::driver::ctl::query(&s, "ls").map_err(|e| e.to_string()),
            )
        })
        .collect()
}

/// What an lvm2 report command (`vgs`, `lvs`) prints, run in this
/// process by the lvm crate as the `lvm` program would (the VGs' metadata
/// read under a shared VG lock; `LVM_SYSTEM_DIR` as lvm's).
fn lvm_report(args: &[&str]) -> Result<String, String> {
    let argv: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    match lvm::commands::run(&argv, &mut out, &mut err) {
        0 => Ok(String::from_utf8_lossy(&out).into_owned()),
        code => Err(format!(
            "{} (exit {code}): {}",
            args.join(" "),
            String::from_utf8_lossy(&err).trim()
        )),
    }
}

/// The clusterfs mounts of this machine (`/proc/mounts`, FUSE subtype
/// clusterfs): (device, mount point, options).
fn clusterfs_mounts() -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.len() >= 4 && f[2] == "fuse.clusterfs")
                .then(|| (unoctal(f[0]), unoctal(f[1]), f[3].to_string()))
        })
        .collect()
}

/// `/proc/mounts`' octal escapes (`\040` for a space) undone.
fn unoctal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b
            .get(i + 1..i + 4)
            .filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match oct {
            Some(d) => {
                out.push(d.iter().fold(0u8, |a, c| a.wrapping_mul(8) + (c - b'0')));
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The journals the dlm user with process id `pid` holds: for each of its
/// lockspaces with a slot, `LS: journal N` (a cluster filesystem's journal
/// is its slot - 1), read from its control socket's `ls`.
fn journals_of(dlm_ctl: &std::path::Path, pid: i32) -> String {
    let suffix = format!("-{pid}.sock");
    let Ok(rd) = std::fs::read_dir(dlm_ctl) else {
        return String::new();
    };
    let mut held = Vec::new();
    for p in rd.filter_map(|e| e.ok().map(|e| e.path())) {
        let name = p
            .file_name()
            .map_or(String::new(), |f| f.to_string_lossy().into_owned());
        if !name.ends_with(&suffix) {
            continue;
        }
        let Ok(text) = dlm::driver::ctl::query(&p, "ls") else {
            continue;
        };
        let mut ls = "";
        for l in text.lines() {
            if let Some(v) = l.strip_prefix("name ") {
                ls = v.trim();
            }
            if let Some(slot) = l
                .strip_prefix("slot ")
                .and_then(|v| v.trim().parse::<u32>().ok())
            {
                if slot > 0 {
                    held.push(format!("{ls}: journal {}", slot - 1));
                }
            }
        }
    }
    held.join(", ")
}

/// The storage page: tgtd's targets, LUNs and sessions, VGs and LVs, the
/// clusterfs mounts, the dlm users' lockspaces, and what the nodes'
/// registries show (mounts and other cluster processes, with the journal
/// each holds), read now.
pub fn storage(
    dirs: &[std::path::PathBuf],
    tgtd: &std::path::Path,
    dlm_ctl: &std::path::Path,
) -> String {
    let mut h = format!("<h2>Storage</h2>{}", read_now());
    h.push_str("<section><h3>iSCSI targets, LUNs and sessions (tgtd)</h3>");
    match tgtd_targets(tgtd) {
        Ok(t) if t.trim().is_empty() => h.push_str("<p id=\"tgtd\">tgtd runs with no target.</p>"),
        Ok(t) => {
            let _ = write!(h, "<pre id=\"tgtd\">{}</pre>", esc(&t));
        }
        Err(e) => {
            let _ = write!(
                h,
                "<p id=\"tgtd\" class=\"note\">No tgtd here: {}</p>",
                esc(&e)
            );
        }
    }
    h.push_str("</section><section><h3>Volume groups and logical volumes (vgs, lvs)</h3>");
    for (id, args) in [("vgs", &["vgs"][..]), ("lvs", &["lvs"][..])] {
        let _ = match lvm_report(args) {
            Ok(t) if t.trim().is_empty() => write!(h, "<p id=\"{id}\">No volume group found.</p>"),
            Ok(t) => write!(h, "<pre id=\"{id}\">{}</pre>", esc(&t)),
            Err(e) => write!(h, "<p id=\"{id}\" class=\"note\">{}</p>", esc(&e)),
        };
    }
    h.push_str("</section><section><h3>clusterfs mounts (/proc/mounts)</h3>");
    let mounts = clusterfs_mounts();
    if mounts.is_empty() {
        h.push_str("<p id=\"mounts\" class=\"note\">No clusterfs is mounted on this machine.</p>");
    } else {
        h.push_str("<table class=\"storage\" id=\"mounts\"><tr><th>Device</th><th>Mount point</th><th>Options</th></tr>");
        for (dev, mnt, opts) in mounts {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&dev),
                esc(&mnt),
                esc(&opts)
            );
        }
        h.push_str("</table>");
    }
    h.push_str(
        "</section><section><h3>DLM lockspaces of this machine's processes</h3><div id=\"dlm\">",
    );
    let spaces = dlm_lockspaces(dlm_ctl);
    if spaces.is_empty() {
        let _ = write!(
            h,
            "<p class=\"note\">No process has a dlm control socket in {}.</p>",
            esc(&dlm_ctl.display().to_string())
        );
    }
    for (name, r) in spaces {
        let _ = match r {
            Ok(t) => write!(h, "<h4>{}</h4><pre>{}</pre>", esc(&name), esc(&t)),
            Err(e) => write!(
                h,
                "<h4>{}</h4><p class=\"error\">{}</p>",
                esc(&name),
                esc(&e)
            ),
        };
    }
    h.push_str("</div></section><h3>Cluster processes of each node</h3>");
    for d in dirs {
        let _ = write!(
            h,
            "<section><h3>{}</h3><table class=\"storage\"><tr><th>Process</th><th>PID</th><th>Running</th><th>Journal held</th><th>Command</th></tr>",
            esc(&d.display().to_string())
        );
        for r in cman::registry::registered(d) {
            let pid = r.pid.as_raw();
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|b| {
                    b.split(|c| *c == 0)
                        .map(|a| String::from_utf8_lossy(a).into_owned())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            let file = r
                .file
                .file_name()
                .map_or(String::new(), |f| f.to_string_lossy().into_owned());
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{pid}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
                esc(&file),
                if r.still_runs() { "yes" } else { "no" },
                esc(&journals_of(dlm_ctl, pid)),
                esc(cmd.trim())
            );
        }
        h.push_str("</table></section>");
    }
    h.push_str(
        "<p class=\"note\">The journal a process holds is its lockspace slot - 1, from its dlm \
         control socket; the journals' count and clean or dirty state are not read.</p>",
    );
    h
}

#[cfg(test)]
mod storage_tests {
    use super::*;

    #[test]
    fn the_journal_a_dlm_user_holds_is_its_slot_less_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = dlm::DlmConfig::new(
            dlm::NodeId(1),
            "127.0.0.1:0".parse().unwrap(),
            std::collections::HashMap::new(),
            dlm::ClusterKey::new(b"luci storage test key").unwrap(),
        );
        cfg.ctl_dir = Some(dir.path().to_path_buf());
        let d = dlm::Dlm::start(cfg).unwrap();
        let pid = std::process::id() as i32;
        assert_eq!(journals_of(dir.path(), pid), "");
        let m = dlm::StaticMembership::new(&[dlm::NodeId(1)]);
        let ls = d.join("webfs", m.as_ref()).unwrap();
        let t = std::time::Instant::now();
        while ls.slot() == 0 {
            assert!(t.elapsed().as_secs() < 30, "no slot");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(journals_of(dir.path(), pid), "webfs: journal 0");
        // Another process's socket is not ours.
        assert_eq!(journals_of(dir.path(), pid + 1), "");
    }

    #[test]
    fn mount_fields_lose_their_octal_escapes() {
        assert_eq!(unoctal("/mnt/a\\040b"), "/mnt/a b");
        assert_eq!(unoctal("plain\\0x"), "plain\\0x");
    }
}
