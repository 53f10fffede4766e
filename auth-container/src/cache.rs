//! Known users from memory.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use kallithea_core::BoxFuture;

use crate::directory::{Attributes, Created, DirectoryError, NewUser, StoredUser, UserDirectory};

/// A [`UserDirectory`] with the users it has seen kept in memory.
///
/// Every change made through it invalidates the user's entry at once; entries
/// also expire after `ttl`, which bounds how long a change made by another
/// process (another IIS worker on the same store) goes unseen.
pub struct CachedDirectory<D> {
    inner: D,
    ttl: Duration,
    users: RwLock<HashMap<String, (Arc<StoredUser>, Instant)>>,
}

impl<D: UserDirectory> CachedDirectory<D> {
    /// Caches `inner`'s users for at most `ttl`.
    pub fn new(inner: D, ttl: Duration) -> Self {
        CachedDirectory {
            inner,
            ttl,
            users: RwLock::new(HashMap::new()),
        }
    }

    /// The directory behind the cache.
    pub fn inner(&self) -> &D {
        &self.inner
    }

    /// The cached user, if present and fresh. No I/O, no allocation.
    pub fn cached(&self, username: &str) -> Option<Arc<StoredUser>> {
        let users = self.users.read().unwrap_or_else(|e| e.into_inner());
        let (user, at) = users.get(username)?;
        (at.elapsed() < self.ttl).then(|| Arc::clone(user))
    }

    /// The user, from memory or from the directory (then remembered).
    pub async fn resolve(&self, username: &str) -> Result<Option<Arc<StoredUser>>, DirectoryError> {
        if let Some(user) = self.cached(username) {
            return Ok(Some(user));
        }
        Ok(self.inner.find(username).await?.map(|u| self.remember(u)))
    }

    fn remember(&self, user: StoredUser) -> Arc<StoredUser> {
        let user = Arc::new(user);
        let mut users = self.users.write().unwrap_or_else(|e| e.into_inner());
        users.insert(user.username.clone(), (Arc::clone(&user), Instant::now()));
        user
    }

    fn forget(&self, username: &str) {
        self.users
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(username);
    }

    /// Drops every cached user.
    pub fn clear(&self) {
        self.users
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

impl<D: UserDirectory> UserDirectory for CachedDirectory<D> {
    fn find<'a>(
        &'a self,
        username: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredUser>, DirectoryError>> {
        Box::pin(async move { Ok(self.resolve(username).await?.map(|u| (*u).clone())) })
    }

    fn create(&self, user: NewUser) -> BoxFuture<'_, Result<Created, DirectoryError>> {
        Box::pin(async move {
            let created = self.inner.create(user).await?;
            self.remember(created.user.clone());
            Ok(created)
        })
    }

    fn update_attributes<'a>(
        &'a self,
        username: &'a str,
        attributes: Attributes,
        extern_name: Option<String>,
    ) -> BoxFuture<'a, Result<StoredUser, DirectoryError>> {
        Box::pin(async move {
            self.forget(username);
            let user = self
                .inner
                .update_attributes(username, attributes, extern_name)
                .await?;
            self.remember(user.clone());
            Ok(user)
        })
    }

    fn set_active<'a>(
        &'a self,
        username: &'a str,
        active: bool,
    ) -> BoxFuture<'a, Result<StoredUser, DirectoryError>> {
        Box::pin(async move {
            self.forget(username);
            let user = self.inner.set_active(username, active).await?;
            self.remember(user.clone());
            Ok(user)
        })
    }

    fn set_extern_type<'a>(
        &'a self,
        username: &'a str,
        extern_type: Option<String>,
    ) -> BoxFuture<'a, Result<StoredUser, DirectoryError>> {
        Box::pin(async move {
            self.forget(username);
            let user = self.inner.set_extern_type(username, extern_type).await?;
            self.remember(user.clone());
            Ok(user)
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<StoredUser>, DirectoryError>> {
        self.inner.list()
    }
}
