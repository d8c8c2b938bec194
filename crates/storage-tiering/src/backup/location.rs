//! Where backups live: a local directory (a path or a `file://` URL) or an object-store prefix
//! (`s3://bucket/prefix`), opened like the store's own object store ([`crate::remote::open_url`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt as _};

use super::BackupError;
use super::manifest::MANIFEST_FILE;

/// A backup location: a root that holds backups (`<root>/<backup id>/`) or one backup. Cheap to
/// clone.
#[derive(Clone)]
pub struct BackupTarget {
    url: String,
    store: Arc<dyn ObjectStore>,
    prefix: String,
    /// The directory, for a local location (files are fsync'd there).
    local: Option<PathBuf>,
    settings_file: Option<PathBuf>,
}

impl fmt::Debug for BackupTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackupTarget")
            .field("url", &self.url)
            .field("settings_file", &self.settings_file)
            .finish_non_exhaustive()
    }
}

impl BackupTarget {
    /// A location from a URL: a directory path (relative to the working directory, created if
    /// missing), `file:///dir`, or `s3://bucket/prefix` (endpoint, region and credentials from
    /// the standard `AWS_*` variables, as for the store's `object_store_url`).
    ///
    /// # Errors
    ///
    /// [`BackupError::InvalidDestination`] naming what is wrong with the URL.
    pub fn parse(url: &str) -> Result<Self, BackupError> {
        let invalid = |reason: String| BackupError::InvalidDestination {
            url: url.to_owned(),
            reason,
        };
        if url.trim().is_empty() {
            return Err(invalid("the location is empty".to_owned()));
        }
        if url.starts_with("s3://") {
            let (store, prefix) =
                crate::remote::open_url(url).map_err(|e| invalid(e.to_string()))?;
            return Ok(Self {
                url: url.to_owned(),
                store,
                prefix,
                local: None,
                settings_file: None,
            });
        }
        let dir = match url.split_once("://") {
            Some(("file", dir)) if !dir.is_empty() => PathBuf::from(dir),
            Some((scheme, _)) => {
                return Err(invalid(format!(
                    "{scheme}:// is not supported: use a directory path, file:// or s3://"
                )));
            }
            None => PathBuf::from(url),
        };
        let dir = if dir.is_absolute() {
            dir
        } else {
            std::env::current_dir()
                .map_err(|e| invalid(format!("no working directory: {e}")))?
                .join(dir)
        };
        std::fs::create_dir_all(&dir)
            .map_err(|e| invalid(format!("cannot create {}: {e}", dir.display())))?;
        let dir = dir
            .canonicalize()
            .map_err(|e| invalid(format!("cannot resolve {}: {e}", dir.display())))?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(&dir)
            .map_err(|e| invalid(e.to_string()))?;
        Ok(Self {
            url: url.to_owned(),
            store: Arc::new(store),
            prefix: String::new(),
            local: Some(dir),
            settings_file: None,
        })
    }

    /// A location in an object store the caller built (a store with its own credentials, or a
    /// test server), under `prefix`; `label` names it in reports.
    pub fn with_object_store(
        label: impl Into<String>,
        store: Arc<dyn ObjectStore>,
        prefix: impl Into<String>,
    ) -> Self {
        Self {
            url: label.into(),
            store,
            prefix: prefix.into().trim_matches('/').to_owned(),
            local: None,
            settings_file: None,
        }
    }

    /// Also backs up this file (the runtime admin settings file of the service), when it
    /// exists; restored into the data directory under its file name.
    #[must_use]
    pub fn settings_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.settings_file = Some(path.into());
        self
    }

    /// The location as given.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    pub(crate) fn settings_path(&self) -> Option<&Path> {
        self.settings_file.as_deref()
    }

    /// The local directory, for a local location.
    pub(crate) fn local_dir(&self) -> Option<&Path> {
        self.local.as_deref()
    }

    /// Whether this location is in `store` (the same client).
    pub(crate) fn same_store(&self, store: &Arc<dyn ObjectStore>) -> bool {
        std::ptr::addr_eq(Arc::as_ptr(&self.store), Arc::as_ptr(store))
    }

    /// The object-store prefix (empty for a local directory).
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The location `name` below this one (a backup of a root).
    pub(crate) fn child(&self, name: &str) -> Self {
        let join = |base: &str| {
            if base.is_empty() {
                name.to_owned()
            } else {
                format!("{}/{name}", base.trim_end_matches('/'))
            }
        };
        Self {
            url: join(&self.url),
            store: Arc::clone(&self.store),
            prefix: join(&self.prefix),
            local: self.local.as_ref().map(|dir| dir.join(name)),
            settings_file: self.settings_file.clone(),
        }
    }

    /// The location above this one (the root of a backup).
    pub(crate) fn parent(&self) -> Self {
        let up = |path: &str| {
            let trimmed = path.trim_end_matches('/');
            trimmed
                .rsplit_once('/')
                .map_or_else(String::new, |(parent, _)| parent.to_owned())
        };
        if self.prefix.is_empty()
            && let Some(parent) = self.local.as_ref().and_then(|dir| dir.parent())
            && let Ok(store) = object_store::local::LocalFileSystem::new_with_prefix(parent)
        {
            return Self {
                url: parent.display().to_string(),
                store: Arc::new(store),
                prefix: String::new(),
                local: Some(parent.to_path_buf()),
                settings_file: self.settings_file.clone(),
            };
        }
        Self {
            url: up(&self.url),
            store: Arc::clone(&self.store),
            prefix: up(&self.prefix),
            local: self
                .local
                .as_ref()
                .map(|dir| dir.parent().map_or_else(|| dir.clone(), Path::to_path_buf)),
            settings_file: self.settings_file.clone(),
        }
    }

    /// The last path component of the location (a backup's id).
    pub(crate) fn name(&self) -> String {
        let trimmed = self.url.trim_end_matches('/');
        trimmed.rsplit('/').next().unwrap_or(trimmed).to_owned()
    }

    fn object(&self, relative: &str) -> ObjectPath {
        let mut path = ObjectPath::from(self.prefix.as_str());
        for part in relative.split('/').filter(|p| !p.is_empty()) {
            path = path.clone().join(part);
        }
        path
    }

    /// Writes `relative` (fsync'd with its directory for a local location).
    pub(crate) async fn put(&self, relative: &str, bytes: Bytes) -> Result<(), BackupError> {
        let failed = |reason: String| BackupError::Destination {
            path: format!("{}/{relative}", self.url.trim_end_matches('/')),
            reason,
        };
        self.store
            .put(&self.object(relative), bytes.into())
            .await
            .map_err(|e| failed(e.to_string()))?;
        if let Some(dir) = &self.local {
            let file = dir.join(relative);
            tokio::task::spawn_blocking(move || sync_file_and_parent(&file))
                .await
                .map_err(|e| failed(e.to_string()))?
                .map_err(|e| failed(e.to_string()))?;
        }
        Ok(())
    }

    /// Reads `relative`; `None` when it does not exist.
    pub(crate) async fn get(&self, relative: &str) -> Result<Option<Bytes>, String> {
        match self.store.get(&self.object(relative)).await {
            Ok(result) => result.bytes().await.map(Some).map_err(|e| e.to_string()),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(error) => Err(error.to_string()),
        }
    }

    /// Whether this location is one backup (it holds a `backup.json`).
    pub(crate) async fn is_backup(&self) -> Result<bool, String> {
        match self.store.head(&self.object(MANIFEST_FILE)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(error) => Err(error.to_string()),
        }
    }

    /// The ids of the complete backups (with a `backup.json`) under this root, oldest first.
    pub(crate) async fn complete_backups(&self) -> Result<Vec<String>, String> {
        let mut ids = Vec::new();
        for id in self.backup_dirs().await? {
            if self.child(&id).is_backup().await? {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    /// The id of the newest complete backup under this root: the directories are looked at newest
    /// first (ids sort by their time), so a status read asks for one `backup.json` in the common
    /// case rather than one per backup kept.
    pub(crate) async fn newest_complete_backup(&self) -> Result<Option<String>, String> {
        for id in self.backup_dirs().await?.into_iter().rev() {
            if self.child(&id).is_backup().await? {
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

    /// The names of the directories right under this root, sorted (oldest backup first).
    async fn backup_dirs(&self) -> Result<Vec<String>, String> {
        let prefix = (!self.prefix.is_empty()).then(|| ObjectPath::from(self.prefix.as_str()));
        let listing = self
            .store
            .list_with_delimiter(prefix.as_ref())
            .await
            .map_err(|e| e.to_string())?;
        let mut ids: Vec<String> = listing
            .common_prefixes
            .iter()
            .filter_map(|dir| dir.filename().map(str::to_owned))
            .collect();
        ids.sort();
        Ok(ids)
    }
}

/// fsyncs a file and its directory (blocking).
fn sync_file_and_parent(file: &Path) -> std::io::Result<()> {
    std::fs::File::open(file)?.sync_all()?;
    if let Some(parent) = file.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}
