//! The JSON API: the same as the pages, for scripts.

use std::sync::Arc;

use auth_container::{StoredUser, UserDirectory};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use kallithea_core::{Identity, User};
use serde_json::json;

use crate::{AdminSettings, Portal};

type MaybeUser = Option<Extension<User>>;

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

async fn admin(portal: &Portal, user: &MaybeUser) -> Result<User, Response> {
    match user {
        Some(Extension(u)) if portal.is_admin(u).await => Ok(u.clone()),
        Some(_) => Err(error(StatusCode::FORBIDDEN, "administrators only")),
        None => Err(error(StatusCode::UNAUTHORIZED, "not signed in")),
    }
}

/// The request's media type, lower-cased, without parameters.
fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// The administrator sending a change. Changes must say they are JSON: a page
/// of another site cannot send that with the browser's ambient credentials
/// without a CORS preflight.
async fn admin_change(
    portal: &Portal,
    user: &MaybeUser,
    headers: &HeaderMap,
) -> Result<User, Response> {
    let me = admin(portal, user).await?;
    if media_type(headers) != "application/json" {
        return Err(not_json());
    }
    Ok(me)
}

fn not_json() -> Response {
    error(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "send Content-Type: application/json",
    )
}

/// `GET /api/whoami`.
pub(crate) async fn whoami(
    user: MaybeUser,
    identity: Option<Extension<Identity>>,
) -> Json<serde_json::Value> {
    let user = user.map(|Extension(u)| u);
    Json(json!({
        "user": user.as_ref().map(|u| &u.username),
        "anonymous": user.as_ref().is_some_and(|u| u.anonymous),
        "email": user.as_ref().and_then(|u| u.email.as_ref()),
        "identity": identity.as_ref().map(|Extension(i)| i.name()),
        "scheme": identity.as_ref().map(|Extension(i)| i.scheme().as_str()),
        "source": identity.as_ref().map(|Extension(i)| i.source().to_string()),
    }))
}

/// `GET /api/users`.
pub(crate) async fn users(State(portal): State<Arc<Portal>>, user: MaybeUser) -> Response {
    if let Err(r) = admin(&portal, &user).await {
        return r;
    }
    let configured = portal.configured_admins();
    match portal.plugin.directory().list().await {
        Ok(list) => Json(
            list.iter()
                .map(|u| user_json(&configured, u))
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

/// A stored user as the API shows it: `admin` says whether the user
/// administers the portal (by the store's flag or the configuration's
/// `admins`), `admin_by_configuration` which of the two.
fn user_json(configured: &dyn Fn(&StoredUser) -> bool, u: &StoredUser) -> serde_json::Value {
    let configured = configured(u);
    let mut v = serde_json::to_value(u).unwrap_or_default();
    if let Some(map) = v.as_object_mut() {
        map.insert("admin".into(), json!(configured || u.admin));
        map.insert("admin_by_configuration".into(), json!(configured));
    }
    v
}

/// `POST /api/users/{name}/{activate|deactivate}`.
pub(crate) async fn user_action(
    State(portal): State<Arc<Portal>>,
    user: MaybeUser,
    headers: HeaderMap,
    Path((name, action)): Path<(String, String)>,
) -> Response {
    let me = match admin_change(&portal, &user, &headers).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let active = match action.as_str() {
        "activate" => true,
        "deactivate" => false,
        _ => return error(StatusCode::NOT_FOUND, "actions are activate and deactivate"),
    };
    if !active {
        if let Err(why) = portal.may_deactivate(&me, &name) {
            return error(StatusCode::CONFLICT, &why);
        }
    }
    match portal.plugin.directory().set_active(&name, active).await {
        Ok(u) => {
            tracing::info!(admin = %me.username, user = %name, active, "user activation changed");
            Json(user_json(&portal.configured_admins(), &u)).into_response()
        }
        Err(auth_container::DirectoryError::NotFound(_)) => {
            error(StatusCode::NOT_FOUND, "no such user")
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

/// `GET /api/settings`.
pub(crate) async fn settings(State(portal): State<Arc<Portal>>, user: MaybeUser) -> Response {
    match admin(&portal, &user).await {
        Ok(_) => Json(AdminSettings::of(&portal.plugin.settings())).into_response(),
        Err(r) => r,
    }
}

/// `PUT /api/settings`.
pub(crate) async fn settings_save(
    State(portal): State<Arc<Portal>>,
    user: MaybeUser,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let me = match admin_change(&portal, &user, &headers).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let new: AdminSettings = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("invalid settings: {e}")),
    };
    match portal.save_settings(new) {
        Ok(()) => {
            tracing::info!(admin = %me.username, "settings changed through the API");
            Json(AdminSettings::of(&portal.plugin.settings())).into_response()
        }
        Err(e) => error(StatusCode::UNPROCESSABLE_ENTITY, &e),
    }
}

/// `POST /api/users/import`: pre-populates the directory from a CSV
/// (`Content-Type: text/csv`, header row `username,email,first_name,last_name,active`)
/// or JSON (`application/json`, an array of the same fields) list.
pub(crate) async fn import(
    State(portal): State<Arc<Portal>>,
    user: MaybeUser,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let me = match admin(&portal, &user).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let media = media_type(&headers);
    let records = match media.as_str() {
        "text/csv" => auth_container::import::read_csv(&body[..]),
        "application/json" => auth_container::import::read_json(&body[..]),
        _ => {
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send text/csv or application/json",
            )
        }
    };
    let records = match records {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let settings = portal.plugin.settings();
    match auth_container::import::import(records, portal.plugin.directory().as_ref(), &settings)
        .await
    {
        Ok(report) => {
            tracing::info!(admin = %me.username, created = report.created, updated = report.updated,
                skipped = report.skipped.len(), "users imported");
            Json(json!({
                "created": report.created,
                "updated": report.updated,
                "skipped": report.skipped.iter().map(|(n, why)| json!({"record": n, "reason": why})).collect::<Vec<_>>(),
            }))
            .into_response()
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}
