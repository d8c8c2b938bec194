//! Encryption of values at rest: one data key per organisation, wrapped by a master key and kept
//! in an object store outside the store's data, so that destroying it makes the organisation's
//! values unreadable wherever copies of them live (segments, WAL, backups).
//!
//! Key hierarchy (`docs/decisions/0114`): a 256-bit master key from the operator wraps a random
//! 256-bit data key per organisation with XChaCha20-Poly1305. Each wrapped key is one object,
//! `<prefix>/<sha256(org)>.key`, created with a conditional put so that two instances never make
//! two keys for one organisation (the loser reads the winner's). [`Keyring::destroy`] leaves a
//! tombstone, `<prefix>/<sha256(org)>.erased` (the erasure ledger), and deletes the key; from then
//! on [`Keyring::seal`] and [`Keyring::open`] answer [`KeyringError::Erased`] until
//! [`Keyring::reinstate`] removes the tombstone, after which the organisation gets a new key and
//! its old values stay unreadable. A check object, `<prefix>/check`, encrypted with the master key,
//! makes a wrong master key a typed error when the keyring opens.
//!
//! ```
//! use std::sync::Arc;
//! use mainstay_storage_tiering::keyring::{Keyring, KeyringError, MasterKey};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let objects = Arc::new(object_store::memory::InMemory::new());
//! let master: MasterKey = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff".parse()?;
//! let keyring = Keyring::builder(objects, master).prefix("_keys").open().await?;
//!
//! let sealed = keyring.seal("acme", "orders", "o-1", b"{\"total\":42}").await?;
//! assert_eq!(&keyring.open("acme", "orders", "o-1", &sealed).await?[..], b"{\"total\":42}");
//! // Bound to its record: moved to another id, it does not open.
//! assert!(matches!(keyring.open("acme", "orders", "o-2", &sealed).await, Err(KeyringError::Damaged { .. })));
//!
//! keyring.destroy("acme").await?;
//! assert!(matches!(keyring.open("acme", "orders", "o-1", &sealed).await, Err(KeyringError::Erased)));
//! # Ok(())
//! # }
//! ```

mod format;
mod metrics;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use chacha20poly1305::XChaCha20Poly1305;
use chacha20poly1305::aead::rand_core::RngCore as _;
use chacha20poly1305::aead::{KeyInit, OsRng};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _, PutMode, PutOptions, PutPayload};
use parking_lot::Mutex;
use sha2::{Digest as _, Sha256};

pub use format::SEAL_OVERHEAD;
pub use metrics::KeyringMetrics;

use format::{Stored, UnwrapError};

/// Data keys cached in memory by default.
pub const DEFAULT_CACHE_KEYS: usize = 10_000;

/// The 256-bit key that wraps every data key. Parsed from 64 hex digits or the base64 (standard
/// or URL-safe, padded or not) of 32 bytes; never shown by `Debug` or in an error.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey([u8; 32]);

impl MasterKey {
    /// A new random key from the operating system's generator.
    #[must_use]
    pub fn generate() -> Self {
        let mut bytes = [0; 32];
        OsRng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// The key as 64 lower-case hex digits (the form to store in a secret).
    #[must_use]
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&self.0.into())
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("MasterKey([REDACTED])")
    }
}

/// A master key that is not 32 bytes in hex or base64. It never holds the text it was given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the master key must be 32 bytes written as 64 hex digits or as base64 (got {length} characters that are neither); make one with `openssl rand -hex 32`"
)]
pub struct MasterKeyError {
    /// How many characters the rejected text had.
    pub length: usize,
}

impl std::str::FromStr for MasterKey {
    type Err = MasterKeyError;

    fn from_str(text: &str) -> Result<Self, MasterKeyError> {
        let text = text.trim();
        let hex = (text.len() == 64).then(|| hex::decode(text).ok()).flatten();
        let decoded = hex.or_else(|| {
            [
                &base64::engine::general_purpose::STANDARD,
                &base64::engine::general_purpose::STANDARD_NO_PAD,
                &base64::engine::general_purpose::URL_SAFE,
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            ]
            .iter()
            .find_map(|engine| engine.decode(text).ok())
        });
        decoded
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .map(Self)
            .ok_or(MasterKeyError { length: text.len() })
    }
}

impl serde::Serialize for MasterKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for MasterKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Why a value could not be sealed or opened, or a key destroyed or reinstated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyringError {
    /// The organisation was erased: its data key was destroyed (and not reinstated, or the value
    /// was sealed under the key it had before).
    #[error(
        "organisation erased: its data key was destroyed, so its values cannot be read or written"
    )]
    Erased,
    /// The value or the organisation's key object does not authenticate: it was changed, moved
    /// from another record, or is not what this build writes.
    #[error("damaged: {reason}")]
    Damaged {
        /// What is wrong.
        reason: &'static str,
    },
    /// A sealed value of an organisation that has neither a key nor a tombstone: the key store is
    /// not the one the value was sealed with (`storage.keys_url` changed, or its objects lost).
    #[error(
        "no data key for the organisation and no record of its erasure: the key store is not the one its values were sealed with"
    )]
    KeyNotFound,
    /// The key store did not answer.
    #[error("the key store is unavailable: {0}")]
    Unavailable(String),
}

/// Why a keyring could not open.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyringOpenError {
    /// The master key is not the one the key store's check object was written with.
    #[error(
        "the master key is not the one this key store was set up with (its check object {path} does not authenticate); give the original `storage.master_key`"
    )]
    WrongMasterKey {
        /// The check object.
        path: String,
    },
    /// The check object is not one this build writes.
    #[error("the key store's check object {path} is damaged or of an unknown version")]
    DamagedCheck {
        /// The check object.
        path: String,
    },
    /// The keys URL is not usable.
    #[error("invalid keys URL {url}: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The key store did not answer.
    #[error("the key store is unavailable: {0}")]
    Unavailable(String),
}

/// Builds a [`Keyring`]; see [`Keyring::builder`].
#[derive(Debug)]
#[must_use]
pub struct KeyringBuilder {
    objects: Arc<dyn ObjectStore>,
    prefix: String,
    master_key: MasterKey,
    cache_keys: usize,
    name: String,
    metrics: KeyringMetrics,
}

impl KeyringBuilder {
    /// The prefix of the key objects in the object store. Default `_keys`. Keep it outside every
    /// store's data prefix and out of backups.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Data keys kept in memory (the oldest cached goes first). Default [`DEFAULT_CACHE_KEYS`].
    pub fn cache_keys(mut self, keys: usize) -> Self {
        self.cache_keys = keys.max(1);
        self
    }

    /// The value of the `keyring` label. Default `keyring`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The metric families to report to.
    pub fn metrics(mut self, metrics: KeyringMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Opens the keyring: reads the check object (writing it when the key store is new) and
    /// verifies the master key with it.
    ///
    /// # Errors
    ///
    /// [`KeyringOpenError::WrongMasterKey`] for another master key than the store's,
    /// [`KeyringOpenError::DamagedCheck`], or [`KeyringOpenError::Unavailable`].
    pub async fn open(self) -> Result<Keyring, KeyringOpenError> {
        let prefix = Path::from(self.prefix.trim_matches('/'));
        let master = self.master_key.cipher();
        let check_path = join(&prefix, "check");
        let unavailable =
            |error: object_store::Error| KeyringOpenError::Unavailable(error.to_string());
        let object = match self.objects.get(&check_path).await {
            Ok(object) => object.bytes().await.map_err(unavailable)?,
            Err(object_store::Error::NotFound { .. }) => {
                let check = format::check_object(&master).ok_or_else(|| {
                    KeyringOpenError::Unavailable("the check object could not be sealed".into())
                })?;
                let created = self
                    .objects
                    .put_opts(
                        &check_path,
                        PutPayload::from(check.clone()),
                        PutOptions::from(PutMode::Create),
                    )
                    .await;
                match created {
                    Ok(_) => Bytes::from(check),
                    // Another instance set the store up first: verify against its check.
                    Err(object_store::Error::AlreadyExists { .. }) => self
                        .objects
                        .get(&check_path)
                        .await
                        .map_err(unavailable)?
                        .bytes()
                        .await
                        .map_err(unavailable)?,
                    Err(error) => return Err(unavailable(error)),
                }
            }
            Err(error) => return Err(unavailable(error)),
        };
        match format::verify_check(&master, &object) {
            Ok(()) => {}
            Err(UnwrapError::Unauthentic) => {
                return Err(KeyringOpenError::WrongMasterKey {
                    path: check_path.to_string(),
                });
            }
            Err(UnwrapError::Malformed) => {
                return Err(KeyringOpenError::DamagedCheck {
                    path: check_path.to_string(),
                });
            }
        }
        Ok(Keyring {
            inner: Arc::new(Inner {
                objects: self.objects,
                prefix,
                master,
                cache: Mutex::new(Cache {
                    keys: HashMap::new(),
                    order: VecDeque::new(),
                    capacity: self.cache_keys,
                }),
                instruments: self.metrics.instruments(&self.name),
            }),
        })
    }
}

/// Per-organisation data keys wrapped by a master key; seals and opens values. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Keyring {
    inner: Arc<Inner>,
}

struct Inner {
    objects: Arc<dyn ObjectStore>,
    prefix: Path,
    master: XChaCha20Poly1305,
    cache: Mutex<Cache>,
    instruments: metrics::Instruments,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Keyring")
            .field("objects", &self.objects)
            .field("prefix", &self.prefix)
            .field("cached_keys", &self.cache.lock().keys.len())
            .finish_non_exhaustive()
    }
}

/// Unwrapped data keys by organisation hash, bounded; the oldest inserted goes first.
#[derive(Debug)]
struct Cache {
    keys: HashMap<String, Arc<DataKey>>,
    order: VecDeque<String>,
    capacity: usize,
}

impl Cache {
    fn insert(&mut self, org_hash: String, key: Arc<DataKey>) {
        if self.keys.insert(org_hash.clone(), key).is_none() {
            self.order.push_back(org_hash);
        }
        while self.keys.len() > self.capacity {
            match self.order.pop_front() {
                Some(oldest) => {
                    self.keys.remove(&oldest);
                }
                None => break,
            }
        }
    }

    fn remove(&mut self, org_hash: &str) {
        if self.keys.remove(org_hash).is_some() {
            self.order.retain(|cached| cached != org_hash);
        }
    }
}

/// An unwrapped data key.
struct DataKey {
    id: u32,
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("DataKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

fn join(prefix: &Path, tail: &str) -> Path {
    let mut path = prefix.clone();
    path.extend(Path::from(tail).parts());
    path
}

fn unavailable(error: &object_store::Error) -> KeyringError {
    KeyringError::Unavailable(error.to_string())
}

/// The identity of an organisation in the key store: the SHA-256 of its name, in hex. Object
/// names and logs carry it, never the name.
#[must_use]
pub fn organisation_hash(organisation: &str) -> String {
    hex::encode(Sha256::digest(organisation.as_bytes()))
}

impl Keyring {
    /// A keyring on `objects`, its data keys wrapped by `master_key`.
    pub fn builder(objects: Arc<dyn ObjectStore>, master_key: MasterKey) -> KeyringBuilder {
        KeyringBuilder {
            objects,
            prefix: "_keys".to_owned(),
            master_key,
            cache_keys: DEFAULT_CACHE_KEYS,
            name: "keyring".to_owned(),
            metrics: KeyringMetrics::unregistered(),
        }
    }

    /// A keyring on the object store a URL names (`memory://`, `file:///dir`,
    /// `s3://bucket/prefix`, as `StoreConfig::object_store_url`), the URL's path being the
    /// prefix of the key objects.
    ///
    /// # Errors
    ///
    /// [`KeyringOpenError::Url`] when the URL is not usable.
    pub fn builder_from_url(
        url: &str,
        master_key: MasterKey,
    ) -> Result<KeyringBuilder, KeyringOpenError> {
        let (objects, prefix) =
            crate::remote::open_url(url).map_err(|error| KeyringOpenError::Url {
                url: url.to_owned(),
                reason: error.to_string(),
            })?;
        Ok(Self::builder(objects, master_key).prefix(prefix))
    }

    /// Seals `plaintext`, the value of record `id` in `collection` of `organisation`, under the
    /// organisation's data key, creating that key on its first use. The result opens only with
    /// the same organisation, collection and id.
    ///
    /// # Errors
    ///
    /// [`KeyringError::Erased`] once the organisation's key was destroyed,
    /// [`KeyringError::Damaged`] when its key object does not unwrap, or
    /// [`KeyringError::Unavailable`].
    pub async fn seal(
        &self,
        organisation: &str,
        collection: &str,
        id: &str,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, KeyringError> {
        let result = async {
            let key = self.key(&organisation_hash(organisation), true).await?;
            format::seal_value(&key.cipher, key.id, collection, id, plaintext).ok_or(
                KeyringError::Damaged {
                    reason: "the value could not be sealed",
                },
            )
        }
        .await;
        self.count("seal", result.as_ref().err(), "ok");
        result
    }

    /// Opens a stored value of record `id` in `collection` of `organisation`. A value without
    /// the sealed header (written before encryption was on) is returned as it is.
    ///
    /// # Errors
    ///
    /// [`KeyringError::Erased`] when the key it was sealed with was destroyed,
    /// [`KeyringError::Damaged`] when it does not authenticate (changed, or moved from another
    /// record), [`KeyringError::KeyNotFound`], or [`KeyringError::Unavailable`].
    pub async fn open(
        &self,
        organisation: &str,
        collection: &str,
        id: &str,
        stored: &[u8],
    ) -> Result<Bytes, KeyringError> {
        let (key_id, header, nonce, body) = match format::parse_value(stored) {
            Stored::Plain => {
                self.inner.instruments.operation("open", "plain");
                return Ok(Bytes::copy_from_slice(stored));
            }
            Stored::Malformed(reason) => {
                let error = KeyringError::Damaged { reason };
                self.count("open", Some(&error), "ok");
                return Err(error);
            }
            Stored::Sealed {
                key_id,
                header,
                nonce,
                body,
            } => (key_id, header, nonce, body),
        };
        let result = async {
            let org_hash = organisation_hash(organisation);
            let mut key = self.key(&org_hash, false).await?;
            if key.id != key_id {
                // The cache may hold a key another instance replaced (erased and reinstated):
                // ask the store once before calling the value erased.
                self.inner.cache.lock().remove(&org_hash);
                key = self.key(&org_hash, false).await?;
                if key.id != key_id {
                    return Err(KeyringError::Erased);
                }
            }
            let aad = format::value_aad(header, collection, id);
            format::open_body(&key.cipher, nonce, &aad, body)
                .map(Bytes::from)
                .ok_or(KeyringError::Damaged {
                    reason: "the value does not authenticate: it was changed or moved from another record",
                })
        }
        .await;
        self.count("open", result.as_ref().err(), "ok");
        result
    }

    /// Erases an organisation's key: writes its tombstone (the erasure ledger entry), deletes its
    /// wrapped key object and forgets the cached key. From then on its values do not open and
    /// new ones are not sealed ([`KeyringError::Erased`]), until [`Keyring::reinstate`].
    /// Idempotent. Other processes that cached the key keep it until they restart or evict it.
    ///
    /// # Errors
    ///
    /// [`KeyringError::Unavailable`]: call again; the erasure is complete only on `Ok`.
    pub async fn destroy(&self, organisation: &str) -> Result<(), KeyringError> {
        self.destroy_hashed(&organisation_hash(organisation)).await
    }

    /// [`Keyring::destroy`] by the organisation's [`organisation_hash`], for callers that keep
    /// only the hash (an erasure ledger never holds the name).
    ///
    /// # Errors
    ///
    /// [`KeyringError::Unavailable`]: call again; the erasure is complete only on `Ok`.
    pub async fn destroy_hashed(&self, org_hash: &str) -> Result<(), KeyringError> {
        let org_hash = org_hash.to_owned();
        let result = async {
            let tombstone = serde_json::json!({
                "erased_at_unix": std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|elapsed| elapsed.as_secs())
                    .unwrap_or_default(),
            });
            self.inner
                .objects
                .put(
                    &self.tombstone_path(&org_hash),
                    PutPayload::from(tombstone.to_string().into_bytes()),
                )
                .await
                .map_err(|error| unavailable(&error))?;
            self.inner.cache.lock().remove(&org_hash);
            match self.inner.objects.delete(&self.key_path(&org_hash)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(error) => return Err(unavailable(&error)),
            }
            self.inner.cache.lock().remove(&org_hash);
            Ok(())
        }
        .await;
        self.count("destroy", result.as_ref().err(), "ok");
        result
    }

    /// Lets an erased organisation have values again: deletes its tombstone, so that the next
    /// [`Keyring::seal`] creates a new data key. Values sealed before the erasure stay unreadable.
    ///
    /// # Errors
    ///
    /// [`KeyringError::Unavailable`].
    pub async fn reinstate(&self, organisation: &str) -> Result<(), KeyringError> {
        let org_hash = organisation_hash(organisation);
        let result = match self
            .inner
            .objects
            .delete(&self.tombstone_path(&org_hash))
            .await
        {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(unavailable(&error)),
        };
        self.count("reinstate", result.as_ref().err(), "ok");
        result
    }

    /// Whether the organisation's key was destroyed and not reinstated (its tombstone exists).
    ///
    /// # Errors
    ///
    /// [`KeyringError::Unavailable`].
    pub async fn is_erased(&self, organisation: &str) -> Result<bool, KeyringError> {
        self.tombstone_exists(&organisation_hash(organisation))
            .await
    }

    fn key_path(&self, org_hash: &str) -> Path {
        join(&self.inner.prefix, &format!("{org_hash}.key"))
    }

    fn tombstone_path(&self, org_hash: &str) -> Path {
        join(&self.inner.prefix, &format!("{org_hash}.erased"))
    }

    fn count(&self, operation: &'static str, error: Option<&KeyringError>, ok: &'static str) {
        let outcome = match error {
            None => ok,
            Some(KeyringError::Erased) => "erased",
            Some(KeyringError::Unavailable(_)) => "unavailable",
            Some(KeyringError::Damaged { .. } | KeyringError::KeyNotFound) => "damaged",
        };
        self.inner.instruments.operation(operation, outcome);
    }

    async fn tombstone_exists(&self, org_hash: &str) -> Result<bool, KeyringError> {
        match self
            .inner
            .objects
            .head(&self.tombstone_path(org_hash))
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(error) => Err(unavailable(&error)),
        }
    }

    /// The organisation's data key: from the cache, the key store, or (with `create`, when it
    /// has none and no tombstone) new.
    async fn key(&self, org_hash: &str, create: bool) -> Result<Arc<DataKey>, KeyringError> {
        let instruments = &self.inner.instruments;
        if let Some(key) = self.inner.cache.lock().keys.get(org_hash).cloned() {
            instruments.lookup("hit");
            return Ok(key);
        }
        let path = self.key_path(org_hash);
        let key = match self.fetch(org_hash, &path).await? {
            Some(key) => {
                instruments.lookup("fetched");
                key
            }
            None => {
                if self.tombstone_exists(org_hash).await? {
                    instruments.lookup("missing");
                    return Err(KeyringError::Erased);
                }
                if !create {
                    instruments.lookup("missing");
                    return Err(KeyringError::KeyNotFound);
                }
                self.create(org_hash, &path).await?
            }
        };
        let key = Arc::new(key);
        self.inner
            .cache
            .lock()
            .insert(org_hash.to_owned(), Arc::clone(&key));
        Ok(key)
    }

    async fn fetch(&self, org_hash: &str, path: &Path) -> Result<Option<DataKey>, KeyringError> {
        let object = match self.inner.objects.get(path).await {
            Ok(object) => object.bytes().await.map_err(|error| unavailable(&error))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(error) => return Err(unavailable(&error)),
        };
        let (id, cipher) = format::unwrap_key(&self.inner.master, org_hash, &object).map_err(
            |error| KeyringError::Damaged {
                reason: match error {
                    UnwrapError::Malformed => "the organisation's key object is malformed",
                    UnwrapError::Unauthentic => {
                        "the organisation's key object does not authenticate under the master key"
                    }
                },
            },
        )?;
        Ok(Some(DataKey { id, cipher }))
    }

    /// Stores a new data key with a conditional put; when another instance stored one first,
    /// reads that one instead.
    async fn create(&self, org_hash: &str, path: &Path) -> Result<DataKey, KeyringError> {
        let key = XChaCha20Poly1305::generate_key(&mut OsRng);
        let id = OsRng.next_u32();
        let wrapped = format::wrap_key(&self.inner.master, org_hash, id, &key).ok_or(
            KeyringError::Damaged {
                reason: "the data key could not be wrapped",
            },
        )?;
        let created = self
            .inner
            .objects
            .put_opts(
                path,
                PutPayload::from(wrapped),
                PutOptions::from(PutMode::Create),
            )
            .await;
        match created {
            Ok(_) => {}
            Err(object_store::Error::AlreadyExists { .. }) => {
                self.inner.instruments.lookup("fetched");
                return self
                    .fetch(org_hash, path)
                    .await?
                    .ok_or(KeyringError::Unavailable(
                        "the data key another instance created is gone again".into(),
                    ));
            }
            Err(error) => return Err(unavailable(&error)),
        }
        // An erasure between the tombstone check and the put must win: take the key back.
        if self.tombstone_exists(org_hash).await? {
            let _ = self.inner.objects.delete(path).await;
            return Err(KeyringError::Erased);
        }
        self.inner.instruments.lookup("created");
        Ok(DataKey {
            id,
            cipher: XChaCha20Poly1305::new(&key),
        })
    }
}
