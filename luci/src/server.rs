//! The HTTP side: routes, the login and session checks, the same-origin
//! and CSRF checks of every action, and the events stream.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::FormRejection;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use parking_lot::Mutex;
use rgmanager::control::AdminAction;
use tokio::sync::watch;

use crate::audit::Audit;
use crate::cluster::{Backend, Snapshot};
use crate::conf::{self, History, Invalid, Version};
use crate::pages::{self, ConfigView};
use crate::session::{cookie, Session, Sessions, COOKIE};
use crate::users::{self, Role};
use crate::util::{now_ms, token};

/// The cookie that carries the login form's CSRF token.
const LOGIN_COOKIE: &str = "luci_login";

/// Everything the handlers share.
pub struct App {
    /// The daemons.
    pub backend: Backend,
    /// The users file.
    pub users: PathBuf,
    /// tgtd's control socket.
    pub tgtd_socket: PathBuf,
    /// The dlm users' control sockets' directory.
    pub dlm_ctl_dir: PathBuf,
    /// Sessions.
    pub sessions: Mutex<Sessions>,
    /// The audit log.
    pub audit: Audit,
    /// The version history.
    pub history: History,
    /// The latest snapshot.
    pub snap: watch::Receiver<Arc<Snapshot>>,
    /// One configuration change at a time.
    pub conf_lock: Arc<std::sync::Mutex<()>>,
}

type Shared = State<Arc<App>>;
/// A form's fields, or why the body is not a form.
type Fields = Result<Form<Vec<(String, String)>>, FormRejection>;

/// The fields of a form body; a body that is not one gets the error page.
#[allow(clippy::result_large_err)]
fn fields(f: Fields, h: &HeaderMap) -> Result<Vec<(String, String)>, Response> {
    f.map(|Form(v)| v).map_err(|e| {
        let why = format!("The request is not a form luci understands: {e}");
        refused(h, None, e.status(), &why)
    })
}

/// The router.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(cluster_page))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/events", get(events))
        .route("/node/{name}", get(node_page))
        .route("/service/{name}", get(service_page))
        .route("/service/action", post(service_action))
        .route("/config", get(config_page))
        .route("/config/apply", post(config_apply))
        .route("/config/domain", post(config_domain))
        .route("/config/element", post(config_element))
        .route("/config/history", get(history_page))
        .route("/config/rollback", post(config_rollback))
        .route("/storage", get(storage_page))
        .route("/audit", get(audit_page))
        .route("/static/luci.js", get(js))
        .route("/static/luci.css", get(css))
        .fallback(not_found)
        .with_state(app)
}

fn secure(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
        ),
    );
    r
}

fn html(status: StatusCode, body: String) -> Response {
    secure(
        (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            body,
        )
            .into_response(),
    )
}

fn redirect(to: &str) -> Response {
    secure((StatusCode::SEE_OTHER, [(header::LOCATION, to.to_string())]).into_response())
}

/// Requests sent by the page's script want the outcome as text.
fn wants_text(h: &HeaderMap) -> bool {
    h.get("x-luci-fetch").is_some()
}

fn refused(h: &HeaderMap, s: Option<&Session>, status: StatusCode, why: &str) -> Response {
    if wants_text(h) {
        return secure((status, why.to_string()).into_response());
    }
    html(status, pages::error(s, "Refused", why))
}

impl App {
    fn session(&self, h: &HeaderMap) -> Option<(String, Session)> {
        let c = h.get(header::COOKIE)?.to_str().ok()?;
        let id = cookie(c, COOKIE)?;
        let s = self.sessions.lock().touch(id, Instant::now())?;
        Some((id.to_string(), s))
    }

    /// The checks of every action: a live session, a request from our own
    /// origin, the session's CSRF token, and (`admin`) the admin role.
    /// A refusal is audited.
    #[allow(clippy::result_large_err)]
    fn guard(
        &self,
        h: &HeaderMap,
        f: &[(String, String)],
        admin: bool,
        what: &str,
    ) -> Result<Session, Response> {
        let Some((_, s)) = self.session(h) else {
            let why = "Not logged in, or the session expired: log in again.";
            self.audit
                .record("(no session)", what, &format!("refused: {why}"));
            return Err(refused(h, None, StatusCode::UNAUTHORIZED, why));
        };
        let why = if !same_origin(h) {
            Some((
                StatusCode::FORBIDDEN,
                "The request did not come from this site (Origin/Referer check).",
            ))
        } else if !field(f, "csrf").is_some_and(|t| s.csrf_ok(t)) {
            Some((
                StatusCode::FORBIDDEN,
                "The request carries no valid CSRF token: reload the page and try again.",
            ))
        } else if admin && s.role != Role::Admin {
            Some((
                StatusCode::FORBIDDEN,
                "Read-only users cannot change the cluster.",
            ))
        } else {
            None
        };
        match why {
            None => Ok(s),
            Some((st, w)) => {
                self.audit.record(&s.user, what, &format!("refused: {w}"));
                Err(refused(h, Some(&s), st, w))
            }
        }
    }
}

/// The request's Origin (or, without one, its Referer) names the host it
/// was sent to. A request with neither is refused.
fn same_origin(h: &HeaderMap) -> bool {
    let Some(host) = h.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let matches = |o: &str| {
        let rest = o
            .strip_prefix("http://")
            .or_else(|| o.strip_prefix("https://"));
        rest.is_some_and(|r| r == host || r.starts_with(&format!("{host}/")))
    };
    match h.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        Some(o) => matches(o),
        None => h
            .get(header::REFERER)
            .and_then(|v| v.to_str().ok())
            .is_some_and(matches),
    }
}

fn field<'a>(f: &'a [(String, String)], name: &str) -> Option<&'a str> {
    f.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

async fn login_page(State(_app): Shared) -> Response {
    let t = token();
    let mut r = html(StatusCode::OK, pages::login(&t, None));
    set_cookie(&mut r, LOGIN_COOKIE, &t);
    r
}

fn set_cookie(r: &mut Response, name: &str, value: &str) {
    let c = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict");
    if let Ok(v) = HeaderValue::from_str(&c) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
}

async fn login(State(app): Shared, h: HeaderMap, f: Fields) -> Response {
    let f = match fields(f, &h) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let pre = h
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|c| cookie(c, LOGIN_COOKIE).map(str::to_string));
    let token_ok = match (pre, field(&f, "csrf")) {
        (Some(a), Some(b)) => crate::util::same(a.as_bytes(), b.as_bytes()),
        _ => false,
    };
    if !same_origin(&h) || !token_ok {
        return html(
            StatusCode::FORBIDDEN,
            pages::error(
                None,
                "Refused",
                "The login form was not sent from this site: reload the login page.",
            ),
        );
    }
    let user = field(&f, "user").unwrap_or("").to_string();
    let password = field(&f, "password").unwrap_or("").to_string();
    let path = app.users.clone();
    let role = tokio::task::spawn_blocking(move || {
        users::load(&path).map(|u| users::check(&u, &user, &password))
    })
    .await;
    let user = field(&f, "user").unwrap_or("");
    match role {
        Ok(Ok(Some(role))) => {
            let id = app.sessions.lock().open(user, role, Instant::now());
            app.audit.record(user, "login", "ok");
            let mut r = redirect("/");
            set_cookie(&mut r, COOKIE, &id);
            r
        }
        Ok(Err(e)) => {
            tracing::error!("{e}");
            app.audit.record(user, "login", &format!("failed: {e}"));
            let t = token();
            let mut r = html(
                StatusCode::INTERNAL_SERVER_ERROR,
                pages::login(&t, Some("The users file cannot be read; see luci's log.")),
            );
            set_cookie(&mut r, LOGIN_COOKIE, &t);
            r
        }
        _ => {
            app.audit
                .record(user, "login", "failed: wrong user or password");
            let t = token();
            let mut r = html(
                StatusCode::UNAUTHORIZED,
                pages::login(&t, Some("Wrong user or password.")),
            );
            set_cookie(&mut r, LOGIN_COOKIE, &t);
            r
        }
    }
}

async fn logout(State(app): Shared, h: HeaderMap, f: Fields) -> Response {
    let f = match fields(f, &h) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let s = match app.guard(&h, &f, false, "logout") {
        Ok(s) => s,
        Err(r) => return r,
    };
    if let Some((id, _)) = app.session(&h) {
        app.sessions.lock().close(&id);
    }
    app.audit.record(&s.user, "logout", "ok");
    redirect("/login")
}

fn need_login(h: &HeaderMap) -> Response {
    if wants_text(h) {
        return secure((StatusCode::UNAUTHORIZED, "not logged in").into_response());
    }
    redirect("/login")
}

async fn cluster_page(State(app): Shared, h: HeaderMap) -> Response {
    let Some((_, s)) = app.session(&h) else {
        return need_login(&h);
    };
    let snap = app.snap.borrow().clone();
    html(StatusCode::OK, pages::cluster(&snap, &s))
}

/// Server-sent events: `cluster` with the data time, the live fragment
/// and the plots at every reading; `expired` when the session is gone.
async fn events(State(app): Shared, h: HeaderMap) -> Response {
    let Some((id, s)) = app.session(&h) else {
        return need_login(&h);
    };
    let rx = app.snap.clone();
    let st = (rx, true, false, app, id, s);
    let stream = futures_util::stream::unfold(st, |(mut rx, first, done, app, id, s)| async move {
        if done {
            return None;
        }
        if !first && rx.changed().await.is_err() {
            return None;
        }
        let alive = app.sessions.lock().alive(&id, Instant::now());
        if !alive {
            let ev = SseEvent::default().event("expired").data("login");
            return Some((Ok::<_, Infallible>(ev), (rx, false, true, app, id, s)));
        }
        let snap = rx.borrow_and_update().clone();
        let data = serde_json::json!({
            "asof": pages::as_of(&snap),
            "live": pages::live(&snap, &s),
            "plots": pages::plots(&snap),
        });
        let ev = SseEvent::default().event("cluster").data(data.to_string());
        Some((Ok(ev), (rx, false, false, app, id, s)))
    });
    let mut r = Sse::new(stream).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn node_page(State(app): Shared, h: HeaderMap, UrlPath(name): UrlPath<String>) -> Response {
    let Some((_, s)) = app.session(&h) else {
        return need_login(&h);
    };
    let snap = app.snap.borrow().clone();
    match pages::node(&snap, &s, &name) {
        Some(body) => html(StatusCode::OK, body),
        None => html(
            StatusCode::NOT_FOUND,
            pages::error(
                Some(&s),
                "No such node",
                &format!("{name} is not a configured node."),
            ),
        ),
    }
}

async fn service_page(
    State(app): Shared,
    h: HeaderMap,
    UrlPath(name): UrlPath<String>,
) -> Response {
    let Some((_, s)) = app.session(&h) else {
        return need_login(&h);
    };
    let snap = app.snap.borrow().clone();
    match pages::service(&snap, &s, &name) {
        Some(body) => html(StatusCode::OK, body),
        None => html(
            StatusCode::NOT_FOUND,
            pages::error(
                Some(&s),
                "No such service",
                &format!("{name} is not a service."),
            ),
        ),
    }
}

fn parse_action(a: &str) -> Option<AdminAction> {
    Some(match a {
        "enable" => AdminAction::Enable,
        "disable" => AdminAction::Disable,
        "relocate" => AdminAction::Relocate,
        "restart" => AdminAction::Restart,
        "freeze" => AdminAction::Freeze,
        "unfreeze" => AdminAction::Unfreeze,
        _ => return None,
    })
}

async fn service_action(State(app): Shared, h: HeaderMap, f: Fields) -> Response {
    let f = match fields(f, &h) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let svc = field(&f, "service").unwrap_or("").to_string();
    let act = field(&f, "action").unwrap_or("").to_string();
    let node = field(&f, "node")
        .filter(|n| !n.is_empty())
        .map(str::to_string);
    let what = format!(
        "{act} {svc}{}",
        node.as_deref()
            .map_or(String::new(), |n| format!(" on {n}"))
    );
    let s = match app.guard(&h, &f, true, &what) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let Some(action) = parse_action(&act) else {
        return refused(
            &h,
            Some(&s),
            StatusCode::BAD_REQUEST,
            &format!("Unknown operation {act:?}."),
        );
    };
    let snap = app.snap.borrow().clone();
    let known = snap.services().map(|v| {
        (
            v.services
                .iter()
                .any(|x| x.name == rgmanager::config::full_name(&svc)),
            node.as_ref()
                .is_none_or(|n| v.nodes.iter().any(|x| &x.name == n)),
        )
    });
    match known {
        Some((false, _)) => {
            return refused(
                &h,
                Some(&s),
                StatusCode::BAD_REQUEST,
                &format!("No service {svc:?}."),
            )
        }
        Some((_, false)) => {
            return refused(
                &h,
                Some(&s),
                StatusCode::BAD_REQUEST,
                &format!("{:?} is not a cluster member.", node.unwrap_or_default()),
            )
        }
        _ => {}
    }
    let node = if action == AdminAction::Relocate {
        node
    } else {
        None
    };
    let backend = app.backend.clone();
    let out = tokio::task::spawn_blocking(move || backend.admin(&svc, action, node.as_deref()))
        .await
        .unwrap_or_else(|e| crate::cluster::AdminOutcome {
            text: format!("luci: the operation's task failed: {e}"),
            ok: false,
        });
    app.audit.record(&s.user, &what, &out.text);
    if wants_text(&h) {
        let st = if out.ok {
            StatusCode::OK
        } else {
            StatusCode::CONFLICT
        };
        return secure((st, out.text).into_response());
    }
    html(StatusCode::OK, pages::action_result(&s, &out.text, out.ok))
}

/// The running text and its version.
fn running(app: &App) -> Result<(String, cman::config::ClusterConf), String> {
    let text = app.backend.running_config()?;
    let conf = conf::validate(&text).map_err(|e| format!("the running cluster.conf: {e}"))?;
    Ok((text, conf))
}

async fn config_page(State(app): Shared, h: HeaderMap) -> Response {
    let Some((_, s)) = app.session(&h) else {
        return need_login(&h);
    };
    let a = app.clone();
    let r = tokio::task::spawn_blocking(move || running(&a)).await;
    match r {
        Ok(Ok((text, c))) => html(
            StatusCode::OK,
            config_view(&s, &text, &c, &text, None, None, None),
        ),
        Ok(Err(e)) => html(
            StatusCode::BAD_GATEWAY,
            pages::error(Some(&s), "cluster.conf", &e),
        ),
        Err(e) => html(
            StatusCode::INTERNAL_SERVER_ERROR,
            pages::error(Some(&s), "cluster.conf", &e.to_string()),
        ),
    }
}

fn config_view(
    s: &Session,
    text: &str,
    c: &cman::config::ClusterConf,
    editing: &str,
    error: Option<&Invalid>,
    diff: Option<&[conf::DiffLine]>,
    message: Option<&str>,
) -> String {
    let v = ConfigView {
        running: text,
        version: c.config_version,
        editing,
        error,
        diff,
        message,
        nodes: c.nodes.iter().map(|n| n.name.clone()).collect(),
        domains: c
            .rm
            .as_ref()
            .map(|r| r.failover_domains.clone())
            .unwrap_or_default(),
    };
    pages::config(s, &v)
}

/// Applies `new` as the next version: validated, version set to the
/// running one + 1, handed to cmand (which sends it to every node), then
/// kept in the history. Returns the running text and version after.
fn apply(app: &App, user: &str, new: &str, what: &str) -> Result<(u64, String), Invalid> {
    let _one = app.conf_lock.lock().unwrap_or_else(|e| e.into_inner());
    let (old, c) = running(app).map_err(|e| Invalid { line: 0, msg: e })?;
    conf::validate(new)?;
    let next = c.config_version + 1;
    let text = conf::with_version(new, next)?;
    conf::validate(&text)?;
    let keep = |v: &Version, t: &str| {
        if let Err(e) = app.history.record(v, t) {
            tracing::error!("history: {e}");
        }
    };
    keep(
        &Version {
            version: c.config_version,
            at_ms: now_ms(),
            user: "(running before)".into(),
            summary: "the version luci found running".into(),
        },
        &old,
    );
    app.backend.push_config(&text).map_err(|e| Invalid {
        line: 0,
        msg: format!("cmand refused it: {e}"),
    })?;
    let summary = format!("{what}: {}", conf::summary(&old, &text));
    keep(
        &Version {
            version: next,
            at_ms: now_ms(),
            user: user.to_string(),
            summary: summary.clone(),
        },
        &text,
    );
    Ok((next, summary))
}

/// Runs a change and renders the configuration page with its outcome.
async fn change(app: Arc<App>, s: Session, new: String, what: String, h: &HeaderMap) -> Response {
    let a = app.clone();
    let user = s.user.clone();
    let (w, n) = (what.clone(), new.clone());
    let r = tokio::task::spawn_blocking(move || {
        let out = apply(&a, &user, &n, &w);
        (out, running(&a))
    })
    .await;
    let Ok((out, now)) = r else {
        return refused(
            h,
            Some(&s),
            StatusCode::INTERNAL_SERVER_ERROR,
            "the change's task failed",
        );
    };
    let (text, c) = match now {
        Ok(x) => x,
        Err(e) => {
            return html(
                StatusCode::BAD_GATEWAY,
                pages::error(Some(&s), "cluster.conf", &e),
            )
        }
    };
    match out {
        Ok((v, summary)) => {
            app.audit
                .record(&s.user, &what, &format!("applied version {v} ({summary})"));
            let msg = format!("Applied version {v}; cmand sends it to every node. {summary}");
            html(
                StatusCode::OK,
                config_view(&s, &text, &c, &text, None, None, Some(&msg)),
            )
        }
        Err(e) => {
            app.audit.record(&s.user, &what, &format!("refused: {e}"));
            html(
                StatusCode::UNPROCESSABLE_ENTITY,
                config_view(&s, &text, &c, &new, Some(&e), None, None),
            )
        }
    }
}

async fn config_apply(State(app): Shared, h: HeaderMap, f: Fields) -> Response {
    let f = match fields(f, &h) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let op = field(&f, "op").unwrap_or("apply");
    let s = match app.guard(&h, &f, true, &format!("cluster.conf raw edit ({op})")) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let new = field(&f, "text").unwrap_or("").replace("\r\n", "\n");
    if op == "diff" {
        let a = app.clone();
        let Ok(Ok((text, c))) = tokio::task::spawn_blocking(move || running(&a)).await else {
            return refused(
                &h,
                Some(&s),
                StatusCode::BAD_GATEWAY,
                "cannot read the running cluster.conf",
            );
        };
        let next = conf::with_version(&new, c.config_version + 1);
        let checked = next.clone().and_then(|t| conf::validate(&t).map(|_| t));
        let (d, err) = match checked {
            Ok(t) => (Some(conf::diff(&text, &t)), None),
            Err(e) => (None, Some(e)),
        };
        return html(
            StatusCode::OK,
            config_view(&s, &text, &c, &new, err.as_ref(), d.as_deref(), None),
        );
    }
    change(app.clone(), s, new, "cluster.conf raw edit".into(), &h).await
}

fn domain_form(f: &[(String, String)]) -> Result<conf::DomainForm, String> {
    let on = |k: &str| field(f, k).is_some_and(|v| v == "1" || v == "on");
    let mut d = conf::DomainForm {
        name: field(f, "name").unwrap_or("").trim().to_string(),
        ordered: on("ordered"),
        restricted: on("restricted"),
        nofailback: on("nofailback"),
        nodes: Vec::new(),
    };
    for (k, v) in f {
        let Some(node) = k.strip_prefix("prio:") else {
            continue;
        };
        if v.trim().is_empty() {
            continue;
        }
        let p: u32 = v
            .trim()
            .parse()
            .ok()
            .filter(|p| (1..=100).contains(p))
            .ok_or_else(|| {
                format!("the priority of {node} must be a number from 1 to 100, not {v:?}")
            })?;
        d.nodes.push((node.to_string(), p));
    }
    d.nodes.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
    Ok(d)
}

async fn config_domain(State(app): Shared, h: HeaderMap, f: Fields) -> Response {
    let f = match fields(f, &h) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let name = field(&f, "name").unwrap_or("").to_string();
    let delete = field(&f, "op") == Some("delete");
    let what = format!(
        "failover domain {name}: {}",
        if delete { "delete" } else { "save" }
    );
    let s = match app.guard(&h, &f, true, &what) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let form = match domain_form(&f) {
        Ok(d) => d,
        Err(e) => return refused(&h, Some(&s), StatusCode::BAD_REQUEST, &e),
    };
    let a = app.clone();
    let Ok(Ok((text, _))) = tokio::task::spawn_blocking(move || running(&a)).await else {
        return refused(
            &h,
            Some(&s),
            StatusCode::BAD_GATEWAY,
            "cannot read the running cluster.conf",
        );
    };
    match conf::edit_domain(&text, &form, delete) {
        Ok(new) => change(app.clone(), s, new, what, &h).await,
        Err(e) => refused(&h, Some(&s), StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

async fn config_element(State(app): Shared, h: HeaderMap, f: Fields) -> Response {
    let f = match fields(f, &h) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let tag = field(&f, "tag").unwrap_or("").to_string();
    let sec = field(&f, "section").and_then(conf::Section::parse);
    let index: Option<usize> = field(&f, "index").and_then(|i| i.parse().ok());
    let what = format!("edit <{tag}> #{}", field(&f, "index").unwrap_or(""));
    let s = match app.guard(&h, &f, true, &what) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let (Some(sec), Some(index)) = (sec, index) else {
        return refused(
            &h,
            Some(&s),
            StatusCode::BAD_REQUEST,
            "The form names no element.",
        );
    };
    let mut attrs: Vec<(String, String)> = f
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("a:")?.to_string(), v.trim().to_string())))
        .collect();
    if let Some(k) = field(&f, "newkey").map(str::trim).filter(|k| !k.is_empty()) {
        let v = field(&f, "newvalue").unwrap_or("").trim().to_string();
        attrs.retain(|(x, _)| x != k);
        attrs.push((k.to_string(), v));
    }
    let a = app.clone();
    let Ok(Ok((text, c))) = tokio::task::spawn_blocking(move || running(&a)).await else {
        return refused(
            &h,
            Some(&s),
            StatusCode::BAD_GATEWAY,
            "cannot read the running cluster.conf",
        );
    };
    // The form's place in the file is only good for the version it was
    // made from.
    if field(&f, "version") != Some(c.config_version.to_string().as_str()) {
        let why = format!(
            "The configuration changed since the form was made (now version {}): reload the page.",
            c.config_version
        );
        return refused(&h, Some(&s), StatusCode::CONFLICT, &why);
    }
    match conf::edit_element(&text, sec, index, &tag, &attrs) {
        Ok(new) => change(app.clone(), s, new, what, &h).await,
        Err(e) => refused(&h, Some(&s), StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

#[derive(serde::Deserialize)]
struct Show {
    show: Option<u64>,
}

async fn history_page(State(app): Shared, h: HeaderMap, Query(q): Query<Show>) -> Response {
    let Some((_, s)) = app.session(&h) else {
        return need_login(&h);
    };
    let a = app.clone();
    let Ok(Ok((text, c))) = tokio::task::spawn_blocking(move || running(&a)).await else {
        return html(
            StatusCode::BAD_GATEWAY,
            pages::error(Some(&s), "History", "cannot read the running cluster.conf"),
        );
    };
    let versions = app.history.list();
    let shown = q
        .show
        .and_then(|v| Some((v, conf::diff(&app.history.text(v)?, &text))));
    html(
        StatusCode::OK,
        pages::history(
            &s,
            c.config_version,
            &versions,
            shown.as_ref().map(|(v, d)| (*v, d.as_slice())),
        ),
    )
}

async fn config_rollback(State(app): Shared, h: HeaderMap, f: Fields) -> Response {
    let f = match fields(f, &h) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let v = field(&f, "version").unwrap_or("").to_string();
    let what = format!("roll back to version {v}");
    let s = match app.guard(&h, &f, true, &what) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let Some(text) = v.parse().ok().and_then(|v| app.history.text(v)) else {
        return refused(
            &h,
            Some(&s),
            StatusCode::BAD_REQUEST,
            &format!("No version {v:?} in the history."),
        );
    };
    change(app.clone(), s, text, what, &h).await
}

async fn storage_page(State(app): Shared, h: HeaderMap) -> Response {
    let Some((_, s)) = app.session(&h) else {
        return need_login(&h);
    };
    let dirs = app.backend.dirs.clone();
    let tgtd = app.tgtd_socket.clone();
    let dlm = app.dlm_ctl_dir.clone();
    let body = tokio::task::spawn_blocking(move || pages::storage(&dirs, &tgtd, &dlm))
        .await
        .unwrap_or_default();
    html(
        StatusCode::OK,
        pages::layout("Storage", Some(&s), Some(pages::Tab::Storage), &body),
    )
}

async fn audit_page(State(app): Shared, h: HeaderMap) -> Response {
    let Some((_, s)) = app.session(&h) else {
        return need_login(&h);
    };
    html(StatusCode::OK, pages::audit(&s, &app.audit.recent()))
}

async fn js() -> Response {
    secure(
        (
            [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
            include_str!("luci.js"),
        )
            .into_response(),
    )
}

async fn css() -> Response {
    secure(
        (
            [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
            include_str!("luci.css"),
        )
            .into_response(),
    )
}

async fn not_found(State(app): Shared, method: Method, h: HeaderMap) -> Response {
    let s = app.session(&h).map(|(_, s)| s);
    let why = format!("There is no page for this {method} request.");
    html(
        StatusCode::NOT_FOUND,
        pages::error(s.as_ref(), "Not found", &why),
    )
}

/// How long a session lasts without requests, by default.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(30 * 60);

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn same_origin_needs_our_host_in_origin_or_referer() {
        let host = ("host", "127.0.0.1:8084");
        assert!(same_origin(&headers(&[
            host,
            ("origin", "http://127.0.0.1:8084")
        ])));
        assert!(same_origin(&headers(&[
            host,
            ("origin", "https://127.0.0.1:8084")
        ])));
        assert!(same_origin(&headers(&[
            host,
            ("referer", "http://127.0.0.1:8084/config")
        ])));
        assert!(!same_origin(&headers(&[host])), "neither header");
        assert!(!same_origin(&headers(&[
            host,
            ("origin", "http://evil.example")
        ])));
        assert!(!same_origin(&headers(&[
            host,
            ("origin", "http://127.0.0.1:8084.evil.example")
        ])));
        assert!(!same_origin(&headers(&[
            host,
            ("referer", "http://127.0.0.1:80840/")
        ])));
        // Origin wins over a matching Referer.
        assert!(!same_origin(&headers(&[
            host,
            ("origin", "http://evil.example"),
            ("referer", "http://127.0.0.1:8084/")
        ])));
        assert!(
            !same_origin(&headers(&[("origin", "http://127.0.0.1:8084")])),
            "no Host"
        );
    }

    #[test]
    fn domain_form_fields() {
        let f = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        let d = domain_form(&f(&[
            ("name", " pref "),
            ("ordered", "1"),
            ("prio:n2", "1"),
            ("prio:n1", "2"),
            ("prio:n3", " "),
        ]))
        .unwrap();
        assert_eq!(d.name, "pref");
        assert!(d.ordered && !d.restricted && !d.nofailback);
        assert_eq!(d.nodes, vec![("n2".to_string(), 1), ("n1".to_string(), 2)]);
        assert!(domain_form(&f(&[("name", "x"), ("prio:n1", "0")])).is_err());
        assert!(domain_form(&f(&[("name", "x"), ("prio:n1", "high")])).is_err());
    }
}
