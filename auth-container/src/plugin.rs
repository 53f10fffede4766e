//! The authentication plugin.

use std::sync::{Arc, RwLock};

use http::request::Parts;
use http::{header, HeaderValue, Response, StatusCode};
use kallithea_core::{AuthOutcome, AuthPlugin, Body, BoxFuture, Rejection, User};

use crate::directory::{DirectoryError, NewUser, StoredUser, UserDirectory, CONTAINER};
use crate::{clean_username, source, Activation, CachedDirectory, Settings};

/// The plugin's name, in logs and in [`User::authenticated_by`].
pub const NAME: &str = "container";

/// Kallithea-style container authentication: the user the host authenticated
/// becomes the application user, created in the directory on first visit.
///
/// For every request (nothing is remembered per session or connection):
/// 1. the name comes from the host: its identity, or the host variable
///    [`Settings::header`] names when that is not `REMOTE_USER`; or — only
///    from a paired front proxy — from [`Settings::fallback_header`];
/// 2. no name: the anonymous user if [`Settings::anonymous`], otherwise 401
///    without a challenge of its own: the host that authenticates issues it
///    (IIS's authentication modules add theirs to every 401; host-hyper's
///    Negotiate challenges before the app is reached);
/// 3. the name is cleaned ([`clean_username`]); a refused name gets 403;
/// 4. the user is looked up (from memory when known) or created, active or
///    not per [`Settings::activation`];
/// 5. a user not created by container authentication (a local account, a
///    hand-made admin) is refused unless linked, so an identity cannot take
///    over an account of the same name; an inactive user gets a 403 page
///    saying the account awaits activation.
pub struct AuthContainer<D> {
    settings: RwLock<Arc<Settings>>,
    directory: Arc<CachedDirectory<D>>,
}

impl<D: UserDirectory> AuthContainer<D> {
    /// The plugin with `settings`, over a shared cached directory (share it with
    /// admin pages so their changes invalidate the cache).
    pub fn new(settings: Settings, directory: Arc<CachedDirectory<D>>) -> Self {
        AuthContainer {
            settings: RwLock::new(Arc::new(settings)),
            directory,
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> Arc<Settings> {
        Arc::clone(&self.settings.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Replaces the settings (admin pages change them at run time); the next
    /// request uses them. Invalid settings are refused with their problems,
    /// and the old ones stay.
    pub fn set_settings(
        &self,
        settings: Settings,
    ) -> Result<(), Vec<kallithea_core::config::Issue>> {
        let mut issues = kallithea_core::config::Issues::default();
        kallithea_core::config::Validate::validate(&settings, &mut issues);
        if !issues.is_empty() {
            return Err(issues.list().to_vec());
        }
        *self.settings.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(settings);
        tracing::info!("container authentication settings changed");
        Ok(())
    }

    /// The directory.
    pub fn directory(&self) -> &Arc<CachedDirectory<D>> {
        &self.directory
    }

    async fn decide(&self, req: &Parts) -> AuthOutcome {
        let settings = self.settings();
        if !settings.enabled {
            return AuthOutcome::NotMine;
        }
        let claim = match source::claimed(req, &settings) {
            Ok(c) => c,
            Err(why) => {
                tracing::warn!(reason = %why, "container authentication: refusing ambiguous proxy headers");
                return reject(StatusCode::BAD_REQUEST, &format!("Bad Request: {why}"));
            }
        };
        let Some(raw) = claim.name else {
            if settings.anonymous {
                return AuthOutcome::Authenticated(User::anonymous(NAME));
            }
            return reject(
                StatusCode::UNAUTHORIZED,
                "Authentication required: the server did not report an authenticated user",
            );
        };
        let username = match clean_username(&raw, &settings) {
            Ok(n) => n,
            Err(why) => {
                tracing::warn!(identity = ?raw, reason = %why, "container authentication: identity refused");
                return reject(StatusCode::FORBIDDEN, &format!("Access denied: {why}"));
            }
        };

        let user = match self
            .resolve_or_create(&username, &raw, &claim.attributes, settings.activation)
            .await
        {
            Ok(u) => u,
            Err(e) => {
                tracing::error!(user = %username, error = %e, "container authentication: user directory failed");
                return reject(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The user directory is unavailable; try again shortly",
                );
            }
        };
        if user.extern_type.as_deref() != Some(CONTAINER) {
            tracing::warn!(
                user = %username,
                identity = ?raw,
                extern_type = ?user.extern_type,
                "container authentication: identity matches an account not linked to container authentication"
            );
            return reject(
                StatusCode::FORBIDDEN,
                &format!(
                    "Access denied: an account named {username:?} exists but is not set up for single sign-on; an administrator can link it"
                ),
            );
        }
        if !user.active {
            tracing::info!(user = %username, "container authentication: account awaits activation");
            return AuthOutcome::Reject(awaiting_activation(&username));
        }
        AuthOutcome::Authenticated(User {
            username: user.username.clone(),
            email: user.attributes.email.clone(),
            first_name: user.attributes.first_name.clone(),
            last_name: user.attributes.last_name.clone(),
            anonymous: false,
            authenticated_by: NAME.to_owned(),
            external_name: Some(raw),
        })
    }

    async fn resolve_or_create(
        &self,
        username: &str,
        raw: &str,
        attributes: &crate::Attributes,
        activation: Activation,
    ) -> Result<Arc<StoredUser>, DirectoryError> {
        if let Some(user) = self.directory.resolve(username).await? {
            if user.extern_type.as_deref() == Some(CONTAINER)
                && attributes.changes(&user.attributes)
            {
                let updated = self
                    .directory
                    .update_attributes(username, attributes.clone(), Some(raw.to_owned()))
                    .await?;
                tracing::info!(user = %username, "container authentication: attributes refreshed");
                return Ok(Arc::new(updated));
            }
            return Ok(user);
        }
        let created = self
            .directory
            .create(NewUser {
                username: username.to_owned(),
                attributes: attributes.clone(),
                active: activation == Activation::Automatic,
                admin: false,
                extern_type: Some(CONTAINER.to_owned()),
                extern_name: Some(raw.to_owned()),
            })
            .await?;
        if created.created {
            tracing::info!(
                user = %username,
                identity = ?raw,
                active = created.user.active,
                "container authentication: user created on first visit"
            );
        }
        Ok(Arc::new(created.user))
    }
}

impl<D: UserDirectory> AuthPlugin for AuthContainer<D> {
    fn name(&self) -> &str {
        NAME
    }

    fn authenticate<'a>(&'a self, req: &'a Parts) -> BoxFuture<'a, AuthOutcome> {
        Box::pin(self.decide(req))
    }
}

fn reject(status: StatusCode, message: &str) -> AuthOutcome {
    AuthOutcome::Reject(Rejection::new(status, message))
}

fn awaiting_activation(username: &str) -> Rejection {
    let name = html_escape(username);
    let page = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Account awaiting activation</title></head>\n\
         <body><h1>Account awaiting activation</h1>\n<p>Your account <strong>{name}</strong> has been created and awaits \
         activation by an administrator. Please try again once it has been activated.</p></body></html>\n"
    );
    let mut resp = Response::new(Body::from(page));
    *resp.status_mut() = StatusCode::FORBIDDEN;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    Rejection::from_response(resp)
}

/// Escapes text for HTML element content and attribute values.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
