//! One extension trait to read host facts from a request.

use http::{request::Parts, Extensions, Request};

use crate::{ConnectionInfo, HostVariables, Identity, PathBase, RequestId, User};

mod sealed {
    /// Gives [`super::RequestExt`] access to the extensions; sealed so that only
    /// `Request` and `Parts` implement it.
    pub trait HasExtensions {
        fn exts(&self) -> &http::Extensions;
    }
}

impl<B> sealed::HasExtensions for Request<B> {
    fn exts(&self) -> &Extensions {
        self.extensions()
    }
}

impl sealed::HasExtensions for Parts {
    fn exts(&self) -> &Extensions {
        &self.extensions
    }
}

/// Reads the facts hosts and plugins attach to a request, on both
/// [`http::Request`] and [`http::request::Parts`].
///
/// ```
/// use kallithea_core::{RequestExt, Identity, AuthScheme};
/// let mut req = http::Request::new(());
/// assert!(req.identity().is_none());
/// req.extensions_mut().insert(Identity::from_host("EXAMPLE\\alice", AuthScheme::Negotiate));
/// assert_eq!(req.identity().unwrap().name(), "EXAMPLE\\alice");
/// assert!(req.path_base().is_root());
/// ```
pub trait RequestExt: sealed::HasExtensions {
    /// The identity the host authenticated, if any.
    fn identity(&self) -> Option<&Identity> {
        self.exts().get()
    }
    /// The connection facts, when the host supplied them.
    fn connection_info(&self) -> Option<&ConnectionInfo> {
        self.exts().get()
    }
    /// The app's mount point; the root when the host set none.
    fn path_base(&self) -> &PathBase {
        static ROOT: PathBase = PathBase::root();
        self.exts().get().unwrap_or(&ROOT)
    }
    /// Trusted host variables (IIS server variables), when the host supplied them.
    fn host_variables(&self) -> Option<&HostVariables> {
        self.exts().get()
    }
    /// The user resolved by the authentication plugin chain, if any.
    fn user(&self) -> Option<&User> {
        self.exts().get()
    }
    /// The request's id, set by the dispatcher.
    fn request_id(&self) -> Option<RequestId> {
        self.exts().get().copied()
    }
}

impl<B> RequestExt for Request<B> {}
impl RequestExt for Parts {}
