//! The HTML pages (server-rendered, no script needed).

use std::sync::Arc;

use auth_container::{html_escape as esc, Activation, UserDirectory};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use kallithea_core::{ConnectionInfo, Identity, PathBase, User};
use serde::Deserialize;

use crate::{security, AdminSettings, Portal};

type MaybeUser = Option<Extension<User>>;
type Base = Option<Extension<PathBase>>;

fn base(b: &Base) -> PathBase {
    b.as_ref().map(|Extension(b)| b.clone()).unwrap_or_default()
}

fn layout(base: &PathBase, title: &str, user: Option<&User>, body: &str) -> Html<String> {
    let who = match user {
        Some(u) if !u.anonymous => format!(
            "signed in as <strong id=\"who\">{}</strong>",
            esc(&u.username)
        ),
        _ => "not signed in".to_owned(),
    };
    let link = |path: &str, text: &str| format!("<a href=\"{}\">{text}</a>", esc(&base.link(path)));
    Html(format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title} — Kallithea portal</title>\
         <style>body{{font-family:sans-serif;max-width:52em;margin:2em auto}}nav a{{margin-right:1em}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3em .6em}}.msg{{color:#a00}}</style></head>\n\
         <body><nav>{} {} {} {} <span style=\"float:right\">{who}</span></nav>\n<h1>{title}</h1>\n{body}\n</body></html>\n",
        link("/", "Who am I"),
        link("/admin/users", "Users"),
        link("/admin/auth", "Authentication"),
        link("/admin/permissions", "Permissions"),
        title = esc(title),
    ))
}

fn denied(base: &PathBase, user: Option<&User>, why: &str) -> Response {
    (
        StatusCode::FORBIDDEN,
        layout(
            base,
            "Access denied",
            user,
            &format!("<p class=\"msg\">{}</p>", esc(why)),
        ),
    )
        .into_response()
}

/// The signed-in administrator, or the response refusing the request.
async fn admin(portal: &Portal, base: &PathBase, user: &MaybeUser) -> Result<User, Response> {
    match user {
        Some(Extension(u)) if portal.is_admin(u).await => Ok(u.clone()),
        Some(Extension(u)) => Err(denied(
            base,
            Some(u),
            "This page is for administrators only.",
        )),
        None => Err(denied(
            base,
            None,
            "Sign in first: this page is for administrators only.",
        )),
    }
}

/// The administrator posting a form of this portal: [`admin`] plus the form
/// token check.
async fn admin_form(
    portal: &Portal,
    base: &PathBase,
    user: &MaybeUser,
    headers: &HeaderMap,
    token: &str,
) -> Result<(User, Session), Response> {
    let me = admin(portal, base, user).await?;
    let session = security::session(headers);
    let valid = session
        .as_deref()
        .is_some_and(|s| portal.form_token_ok(&me.username, s, token, crate::unix_now()));
    match session {
        Some(id) if valid => Ok((me, Session { id, new: false })),
        _ => {
            tracing::warn!(admin = %me.username, "form refused: missing, expired or foreign form token");
            Err(denied(
                base,
                Some(&me),
                "The form has expired or did not come from this portal; reload the page.",
            ))
        }
    }
}

/// The browser's form session: the one it presented, or a new one to set.
pub(crate) struct Session {
    id: String,
    new: bool,
}

impl Session {
    /// The session `headers` carry, or a new one.
    fn of(headers: &HeaderMap) -> Result<Session, StatusCode> {
        if let Some(id) = security::session(headers) {
            return Ok(Session { id, new: false });
        }
        match security::new_session() {
            Ok(id) => Ok(Session { id, new: true }),
            Err(e) => {
                tracing::error!(error = %e, "cannot make a form session");
                Err(StatusCode::SERVICE_UNAVAILABLE)
            }
        }
    }

    /// Gives the browser the session if it is new.
    fn set(&self, mut resp: Response, base: &PathBase, conn: &Conn) -> Response {
        if self.new {
            let secure = conn.as_ref().is_some_and(|Extension(c)| c.secure);
            resp.headers_mut().append(
                header::SET_COOKIE,
                security::set_cookie(&self.id, base, secure),
            );
        }
        resp
    }
}

type Conn = Option<Extension<ConnectionInfo>>;

/// Saves edited settings and shows the page again with the outcome.
#[allow(clippy::too_many_arguments)]
fn save_and_show(
    portal: &Portal,
    base: &PathBase,
    me: &User,
    session: &Session,
    edited: AdminSettings,
    title: &str,
    path: &str,
    fields: fn(&AdminSettings) -> String,
) -> Response {
    let message = match portal.save_settings(edited) {
        Ok(()) => "Saved.".to_owned(),
        Err(e) => format!("Not saved: {e}"),
    };
    let shown = AdminSettings::of(&portal.plugin.settings());
    settings_page(
        portal,
        base,
        me,
        session,
        title,
        path,
        &fields(&shown),
        &message,
    )
}

fn csrf_field(portal: &Portal, user: &User, session: &Session) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        portal.form_token_now(&user.username, &session.id)
    )
}

/// `/`: who the portal thinks you are.
pub(crate) async fn whoami(
    State(_portal): State<Arc<Portal>>,
    user: MaybeUser,
    identity: Option<Extension<Identity>>,
    b: Base,
) -> Html<String> {
    let base = base(&b);
    let user = user.map(|Extension(u)| u);
    let row = |k: &str, v: &str| format!("<tr><th>{k}</th><td>{}</td></tr>", esc(v));
    let mut rows = String::new();
    match &user {
        Some(u) => {
            rows += &row("user", &u.username);
            rows += &row("anonymous", if u.anonymous { "yes" } else { "no" });
            rows += &row("e-mail", u.email.as_deref().unwrap_or("—"));
            rows += &row("authenticated by", &u.authenticated_by);
        }
        None => rows += &row("user", "none"),
    }
    if let Some(Extension(id)) = &identity {
        rows += &row("identity from the host", id.name());
        rows += &row("scheme", id.scheme().as_str());
        rows += &row("vouched for by", &id.source().to_string());
    }
    layout(
        &base,
        "Who am I",
        user.as_ref(),
        &format!("<table id=\"whoami\">{rows}</table>"),
    )
}

/// `/admin/users`.
pub(crate) async fn users(
    State(portal): State<Arc<Portal>>,
    user: MaybeUser,
    b: Base,
    conn: Conn,
    headers: HeaderMap,
) -> Response {
    let base = base(&b);
    let me = match admin(&portal, &base, &user).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let session = match Session::of(&headers) {
        Ok(s) => s,
        Err(status) => return status.into_response(),
    };
    let list = match portal.plugin.directory().list().await {
        Ok(l) => l,
        Err(e) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("user store failed: {e}"),
            )
                .into_response()
        }
    };
    let configured = portal.configured_admins();
    // One form token for the page: every form on it posts with it.
    let token_field = csrf_field(&portal, &me, &session);
    let mut rows = String::new();
    for u in &list {
        let (action, label) = if u.active {
            ("deactivate", "Deactivate")
        } else {
            ("activate", "Activate")
        };
        let form = format!(
            "<form method=\"post\" action=\"{}\">{}<button type=\"submit\" id=\"{action}-{}\">{label}</button></form>",
            esc(&base.link(&format!("/admin/users/{}/{action}", percent(&u.username)))),
            token_field,
            esc(&u.username),
        );
        let admin = if configured(u) {
            "yes (configuration)"
        } else if u.admin {
            "yes"
        } else {
            ""
        };
        rows += &format!(
            "<tr data-user=\"{name}\"><td>{name}{}</td><td>{}</td><td class=\"state\">{}</td><td class=\"admin\">{admin}</td><td>{}</td><td>{form}</td></tr>",
            code_points(&u.username),
            esc(u.attributes.email.as_deref().unwrap_or("")),
            if u.active { "active" } else { "inactive" },
            esc(u.extern_type.as_deref().unwrap_or("")),
            name = esc(&u.username),
        );
    }
    let body = format!(
        "<table id=\"users\"><tr><th>user</th><th>e-mail</th><th>state</th><th>admin</th><th>authentication</th><th></th></tr>{rows}</table>"
    );
    session.set(
        layout(&base, "Users", Some(&me), &body).into_response(),
        &base,
        &conn,
    )
}

/// The non-ASCII characters of a name as code points, so that names that
/// look alike (Latin `a` and Cyrillic `а`) can be told apart on the page.
fn code_points(name: &str) -> String {
    if name.is_ascii() {
        return String::new();
    }
    let list: Vec<String> = name
        .chars()
        .filter(|c| !c.is_ascii())
        .map(|c| format!("U+{:04X}", u32::from(c)))
        .collect();
    format!(" <small class=\"cp\">({})</small>", list.join(" "))
}

#[derive(Deserialize)]
pub(crate) struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /admin/users/{name}/{activate|deactivate}`.
pub(crate) async fn user_action(
    State(portal): State<Arc<Portal>>,
    user: MaybeUser,
    b: Base,
    headers: HeaderMap,
    Path((name, action)): Path<(String, String)>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let base = base(&b);
    let (me, _) = match admin_form(&portal, &base, &user, &headers, &form.csrf).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let active = match action.as_str() {
        "activate" => true,
        "deactivate" => false,
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    if !active {
        if let Err(why) = portal.may_deactivate(&me, &name) {
            return (
                StatusCode::CONFLICT,
                layout(
                    &base,
                    "Not changed",
                    Some(&me),
                    &format!("<p class=\"msg\" id=\"message\">{}</p>", esc(&why)),
                ),
            )
                .into_response();
        }
    }
    match portal.plugin.directory().set_active(&name, active).await {
        Ok(_) => {
            tracing::info!(admin = %me.username, user = %name, active, "user activation changed");
            Redirect::to(&base.link("/admin/users")).into_response()
        }
        Err(auth_container::DirectoryError::NotFound(_)) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

fn checkbox(name: &str, on: bool) -> String {
    format!(
        "<input type=\"checkbox\" name=\"{name}\" id=\"{name}\" value=\"on\"{}>",
        if on { " checked" } else { "" }
    )
}

#[allow(clippy::too_many_arguments)]
fn settings_page(
    portal: &Portal,
    base: &PathBase,
    me: &User,
    session: &Session,
    title: &str,
    path: &str,
    fields: &str,
    message: &str,
) -> Response {
    let msg = if message.is_empty() {
        String::new()
    } else {
        format!("<p class=\"msg\" id=\"message\">{}</p>", esc(message))
    };
    let body = format!(
        "{msg}<form method=\"post\" action=\"{}\">{}{fields}<p><button type=\"submit\" id=\"save\">Save</button></p></form>",
        esc(&base.link(path)),
        csrf_field(portal, me, session)
    );
    layout(base, title, Some(me), &body).into_response()
}

fn auth_fields(s: &AdminSettings) -> String {
    format!(
        "<p><label>{} Container authentication enabled</label></p>\
         <p><label>Header (host variable) <input name=\"header\" id=\"header\" value=\"{}\"></label></p>\
         <p><label>Fallback header (trusted proxy only) <input name=\"fallback_header\" id=\"fallback_header\" value=\"{}\"></label></p>\
         <p><label>{} Clean user names (strip domain and realm)</label></p>",
        checkbox("enabled", s.enabled),
        esc(&s.header),
        esc(s.fallback_header.as_deref().unwrap_or("")),
        checkbox("clean_username", s.clean_username),
    )
}

fn permission_fields(s: &AdminSettings) -> String {
    let opt = |v: &str, on: bool| {
        format!(
            "<option value=\"{v}\"{}>{v}</option>",
            if on { " selected" } else { "" }
        )
    };
    format!(
        "<p><label>{} Anonymous access</label></p>\
         <p><label>New users <select name=\"activation\" id=\"activation\">{}{}</select></label></p>",
        checkbox("anonymous", s.anonymous),
        opt("automatic", s.activation == Activation::Automatic),
        opt("manual", s.activation == Activation::Manual),
    )
}

/// `/admin/auth`.
pub(crate) async fn auth(
    State(portal): State<Arc<Portal>>,
    user: MaybeUser,
    b: Base,
    conn: Conn,
    headers: HeaderMap,
) -> Response {
    let base = base(&b);
    let page = SettingsPage {
        title: "Authentication",
        path: "/admin/auth",
        fields: auth_fields,
    };
    page.show(&portal, &base, &user, &conn, &headers).await
}

/// A settings page: its title, path and form fields.
struct SettingsPage {
    title: &'static str,
    path: &'static str,
    fields: fn(&AdminSettings) -> String,
}

impl SettingsPage {
    /// The page for an administrator, with a form session.
    async fn show(
        &self,
        portal: &Portal,
        base: &PathBase,
        user: &MaybeUser,
        conn: &Conn,
        headers: &HeaderMap,
    ) -> Response {
        let me = match admin(portal, base, user).await {
            Ok(me) => me,
            Err(r) => return r,
        };
        let session = match Session::of(headers) {
            Ok(s) => s,
            Err(status) => return status.into_response(),
        };
        let s = AdminSettings::of(&portal.plugin.settings());
        let page = settings_page(
            portal,
            base,
            &me,
            &session,
            self.title,
            self.path,
            &(self.fields)(&s),
            "",
        );
        session.set(page, base, conn)
    }
}

#[derive(Deserialize)]
pub(crate) struct AuthForm {
    #[serde(default)]
    csrf: String,
    enabled: Option<String>,
    header: String,
    #[serde(default)]
    fallback_header: String,
    clean_username: Option<String>,
}

/// `POST /admin/auth`.
pub(crate) async fn auth_save(
    State(portal): State<Arc<Portal>>,
    user: MaybeUser,
    b: Base,
    headers: HeaderMap,
    Form(form): Form<AuthForm>,
) -> Response {
    let base = base(&b);
    let (me, session) = match admin_form(&portal, &base, &user, &headers, &form.csrf).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let mut s = AdminSettings::of(&portal.plugin.settings());
    s.enabled = form.enabled.is_some();
    s.header = form.header.trim().to_owned();
    s.fallback_header = Some(form.fallback_header.trim().to_owned()).filter(|h| !h.is_empty());
    s.clean_username = form.clean_username.is_some();
    save_and_show(
        &portal,
        &base,
        &me,
        &session,
        s,
        "Authentication",
        "/admin/auth",
        auth_fields,
    )
}

/// `/admin/permissions`.
pub(crate) async fn permissions(
    State(portal): State<Arc<Portal>>,
    user: MaybeUser,
    b: Base,
    conn: Conn,
    headers: HeaderMap,
) -> Response {
    let base = base(&b);
    let page = SettingsPage {
        title: "Permissions",
        path: "/admin/permissions",
        fields: permission_fields,
    };
    page.show(&portal, &base, &user, &conn, &headers).await
}

#[derive(Deserialize)]
pub(crate) struct PermissionsForm {
    #[serde(default)]
    csrf: String,
    anonymous: Option<String>,
    activation: Activation,
}

/// `POST /admin/permissions`.
pub(crate) async fn permissions_save(
    State(portal): State<Arc<Portal>>,
    user: MaybeUser,
    b: Base,
    headers: HeaderMap,
    Form(form): Form<PermissionsForm>,
) -> Response {
    let base = base(&b);
    let (me, session) = match admin_form(&portal, &base, &user, &headers, &form.csrf).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let mut s = AdminSettings::of(&portal.plugin.settings());
    s.anonymous = form.anonymous.is_some();
    s.activation = form.activation;
    save_and_show(
        &portal,
        &base,
        &me,
        &session,
        s,
        "Permissions",
        "/admin/permissions",
        permission_fields,
    )
}

/// Percent-encodes a user name for a path segment.
fn percent(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
