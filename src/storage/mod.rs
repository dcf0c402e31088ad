//! The object storage port: encrypted ledger files by key. Only ciphertext ever passes
//! through here (the pipeline encrypts before writing, the download decrypts after reading).
//! One adapter over the `object_store` crate serves local directories (`file://`) and, later,
//! S3; it never deletes anything.

#[cfg(test)]
pub mod contract;
mod local;
mod reader;

pub use reader::{ObjectReader, StreamReader};

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientOptions, GetResultPayload, ObjectStore, PutPayload, RetryConfig,
    WriteMultipart,
};

/// Errors of a storage backend.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// No object under that key.
    #[error("object not found: {0}")]
    NotFound(String),
    /// The storage URL is not usable.
    #[error("storage configuration: {0}")]
    Config(String),
    /// The backend failed.
    #[error("object storage backend error: {0}")]
    Backend(String),
}

impl From<object_store::Error> for StorageError {
    fn from(e: object_store::Error) -> Self {
        match e {
            object_store::Error::NotFound { path, .. } => StorageError::NotFound(path),
            // Refused credentials or permissions are a misconfiguration, not an outage:
            // retrying cannot help, so they are not reported as a backend fault.
            e @ (object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. }) => StorageError::Config(e.to_string()),
            other => StorageError::Backend(other.to_string()),
        }
    }
}

/// A byte stream read from storage.
pub type ByteStream = BoxStream<'static, Result<Bytes, StorageError>>;

/// An upload in progress. Nothing is visible under the key until `finish` succeeds.
#[async_trait]
pub trait ObjectWriter: Send {
    /// Appends bytes (waits when the backend is behind, which bounds memory).
    async fn write(&mut self, bytes: Bytes) -> Result<(), StorageError>;
    /// Makes the object visible, and durable: once this returns, the object survives a
    /// power loss (a local directory: the file and the directories that name it are
    /// fsynced; S3 acknowledges only what it stored).
    async fn finish(self: Box<Self>) -> Result<(), StorageError>;
    /// Gives up; no object appears.
    async fn abort(self: Box<Self>);
}

/// The object storage port.
#[async_trait]
pub trait ObjectStorage: Send + Sync {
    /// Starts an upload to `key`.
    async fn writer(&self, key: &str) -> Result<Box<dyn ObjectWriter>, StorageError>;
    /// Opens an object for reading, in pieces of the sizes its reader asks for.
    async fn read(&self, key: &str) -> Result<Box<dyn ObjectReader>, StorageError>;
    /// Size of an object, `None` when absent.
    async fn size(&self, key: &str) -> Result<Option<u64>, StorageError>;
    /// Every key under `prefix` (for tests and audits).
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError>;
    /// Removes an object; an absent one is no error. Only the operator acts of SPEC §15
    /// remove objects: a rewrap, the object it replaced; retention, a ledger's objects.
    async fn delete(&self, key: &str) -> Result<(), StorageError>;
    /// Answers when the backend answers.
    async fn ready(&self) -> Result<(), StorageError>;
}

pub use crate::config::S3Settings;

/// Part size of multipart uploads to S3: its minimum is 5 MiB.
const S3_PART_SIZE: usize = 5 * 1024 * 1024;
/// Part size of uploads to a local directory, which has no minimum: smaller parts keep a
/// large ledger's upload buffers (part size × parts in flight) small.
const LOCAL_PART_SIZE: usize = 1024 * 1024;
/// Parts in flight per upload; with the part size this bounds an upload's memory.
const MAX_PARTS_IN_FLIGHT: usize = 2;

/// [`ObjectStorage`] over any `object_store` backend, under a key prefix.
pub struct ObjectStoreStorage {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    part_size: usize,
    /// The directory of a local store, whose finished files this adapter fsyncs itself:
    /// `object_store`'s local backend writes and renames without an fsync.
    local: Option<Arc<local::LocalDisk>>,
}

impl ObjectStoreStorage {
    /// A storage over `store`; keys are placed under `prefix` (may be empty).
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str) -> Self {
        Self {
            store,
            prefix: prefix.trim_matches('/').to_owned(),
            part_size: S3_PART_SIZE,
            local: None,
        }
    }

    /// A local directory, created when missing.
    pub fn local(dir: &std::path::Path) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StorageError::Config(format!("cannot create {}: {e}", dir.display())))?;
        let fs = LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| StorageError::Config(e.to_string()))?;
        Ok(Self {
            part_size: LOCAL_PART_SIZE,
            local: Some(Arc::new(local::LocalDisk::new(dir))),
            ..Self::new(Arc::new(fs), "")
        })
    }

    /// An S3 (or S3-compatible) bucket. Transient failures (5xx, 503 SlowDown, broken
    /// connections) get a few retries with backoff inside the request, then surface.
    pub fn s3(settings: &S3Settings) -> Result<Self, StorageError> {
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&settings.bucket)
            .with_region(&settings.region)
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: std::time::Duration::from_millis(100),
                    max_backoff: std::time::Duration::from_secs(2),
                    base: 2.0,
                },
                max_retries: 3,
                retry_timeout: std::time::Duration::from_secs(30),
            })
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(std::time::Duration::from_secs(5))
                    .with_timeout(std::time::Duration::from_secs(60)),
            );
        if let Some(endpoint) = &settings.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        if let (Some(id), Some(secret)) = (&settings.access_key_id, &settings.secret_access_key) {
            builder = builder
                .with_access_key_id(id)
                .with_secret_access_key(secret.expose());
        }
        // Errors of the builder name the setting, never a credential's value.
        let store = builder
            .build()
            .map_err(|e| StorageError::Config(e.to_string()))?;
        Ok(Self::new(Arc::new(store), &settings.prefix))
    }

    fn path(&self, key: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(key)
        } else {
            ObjectPath::from(format!("{}/{key}", self.prefix))
        }
    }

    fn key_of(&self, path: &ObjectPath) -> String {
        let full = path.to_string();
        match full.strip_prefix(&self.prefix) {
            Some(rest) if !self.prefix.is_empty() => rest.trim_start_matches('/').to_owned(),
            _ => full,
        }
    }
}

/// An upload that stays a single PUT while the object is smaller than one part (most
/// ledgers: one round trip instead of three) and turns into a multipart upload once it
/// grows past that, so memory stays bounded for any size.
struct Upload {
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
    pending: Vec<Bytes>,
    pending_size: usize,
    part_size: usize,
    multipart: Option<WriteMultipart>,
    /// A local store's directory: a single-part object is written there by this adapter,
    /// a multipart one is fsynced there once `object_store` finished it.
    local: Option<Arc<local::LocalDisk>>,
}

#[async_trait]
impl ObjectWriter for Upload {
    async fn write(&mut self, bytes: Bytes) -> Result<(), StorageError> {
        if let Some(multipart) = &mut self.multipart {
            multipart.wait_for_capacity(MAX_PARTS_IN_FLIGHT).await?;
            multipart.put(bytes);
            return Ok(());
        }
        self.pending_size += bytes.len();
        self.pending.push(bytes);
        if self.pending_size >= self.part_size {
            let upload = self.store.put_multipart(&self.path).await?;
            let mut multipart = WriteMultipart::new_with_chunk_size(upload, self.part_size);
            for chunk in self.pending.drain(..) {
                multipart.put(chunk);
            }
            self.pending_size = 0;
            self.multipart = Some(multipart);
        }
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<(), StorageError> {
        let (local, path) = (self.local, self.path);
        match (self.multipart, local) {
            (Some(multipart), local) => {
                multipart.finish().await?;
                if let Some(local) = local {
                    on_disk(move || local.sync(&path)).await?;
                }
            }
            // One trip to the blocking pool: write, fsync, rename, directory entries.
            (None, Some(local)) => {
                let chunks = self.pending;
                on_disk(move || local.put(&path, &chunks)).await?;
            }
            (None, None) => {
                let payload: PutPayload = self.pending.into_iter().collect();
                self.store.put(&path, payload).await?;
            }
        }
        Ok(())
    }

    async fn abort(self: Box<Self>) {
        // Before the first part nothing was sent: there is nothing to clean up.
        if let Some(multipart) = self.multipart
            && let Err(e) = multipart.abort().await
        {
            tracing::warn!(error = %e, "aborting an upload failed; the backend may keep an incomplete upload");
        }
    }
}

#[async_trait]
impl ObjectStorage for ObjectStoreStorage {
    async fn writer(&self, key: &str) -> Result<Box<dyn ObjectWriter>, StorageError> {
        Ok(Box::new(Upload {
            store: self.store.clone(),
            path: self.path(key),
            pending: Vec::new(),
            pending_size: 0,
            part_size: self.part_size,
            multipart: None,
            local: self.local.clone(),
        }))
    }

    async fn read(&self, key: &str) -> Result<Box<dyn ObjectReader>, StorageError> {
        let result = self.store.get(&self.path(key)).await?;
        match result.payload {
            // A local file: object_store would read it in 8 KiB pieces, each on the blocking
            // pool (a thread hand-over every 8 KiB kept a download at 0.24 GB/s): read it
            // in the pieces asked for, from the page cache where it is there.
            GetResultPayload::File(file, _) => Ok(Box::new(reader::FileReader::new(file))),
            GetResultPayload::Stream(stream) => Ok(Box::new(StreamReader::new(
                stream.map(|r| r.map_err(StorageError::from)).boxed(),
            ))),
        }
    }

    async fn size(&self, key: &str) -> Result<Option<u64>, StorageError> {
        match self.store.head(&self.path(key)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let path = self.path(prefix);
        let mut out = Vec::new();
        let mut stream = self.store.list(Some(&path));
        while let Some(meta) = stream.next().await {
            out.push(self.key_of(&meta?.location));
        }
        out.sort();
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        match self.store.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn ready(&self) -> Result<(), StorageError> {
        // A cheap listing proves the backend answers and the credentials are accepted.
        let prefix = (!self.prefix.is_empty()).then(|| ObjectPath::from(self.prefix.as_str()));
        self.store.list_with_delimiter(prefix.as_ref()).await?;
        Ok(())
    }
}

/// Runs a local store's file work on the blocking pool.
async fn on_disk(
    work: impl FnOnce() -> Result<(), StorageError> + Send + 'static,
) -> Result<(), StorageError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StorageError::Backend(format!("local storage task failed: {e}")))?
}

/// Opens the object storage `kind` names.
pub fn open(kind: &crate::config::StorageKind) -> anyhow::Result<Arc<dyn ObjectStorage>> {
    use crate::config::StorageKind;
    use anyhow::Context as _;
    let storage = match kind {
        StorageKind::Local(dir) => ObjectStoreStorage::local(dir),
        StorageKind::S3(settings) => ObjectStoreStorage::s3(settings),
    };
    Ok(Arc::new(storage.context("APP_ENV_STORAGE_URL")?))
}

#[async_trait]
impl crate::ready::Ready for dyn ObjectStorage {
    async fn ready(&self) -> Result<(), String> {
        ObjectStorage::ready(self).await.map_err(|e| e.to_string())
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    #[tokio::test]
    async fn a_local_directory_meets_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        let storage = ObjectStoreStorage::local(dir.path()).unwrap();
        contract::run_all(&storage).await;
    }

    /// The S3 server of the test suite (moto, started by `scripts/run-tests.sh`).
    pub fn test_s3_endpoint() -> String {
        std::env::var("LEDGER_TEST_S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:19000".into())
    }

    /// A fresh bucket on the test S3 server.
    pub async fn test_bucket() -> S3Settings {
        let endpoint = test_s3_endpoint();
        let bucket = format!("ledger-test-{}", uuid::Uuid::new_v4().simple());
        let created = reqwest::Client::new()
            .put(format!("{endpoint}/{bucket}"))
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!("no S3 server at {endpoint} ({e}); scripts/run-tests.sh starts one (moto)")
            });
        assert!(
            created.status().is_success(),
            "creating bucket {bucket}: {}",
            created.status()
        );
        S3Settings {
            bucket,
            prefix: "tenant".into(),
            endpoint: Some(endpoint),
            region: "us-east-1".into(),
            access_key_id: Some("test".into()),
            secret_access_key: Some(crate::config::Secret::new("test")),
        }
    }

    #[tokio::test]
    async fn an_s3_bucket_meets_the_contract() {
        let settings = test_bucket().await;
        let storage = ObjectStoreStorage::s3(&settings).unwrap();
        contract::run_all(&storage).await;
    }

    #[tokio::test]
    async fn an_unreachable_s3_fails_within_bounded_retries() {
        let settings = S3Settings {
            endpoint: Some("http://127.0.0.1:9".into()),
            ..test_bucket().await
        };
        let storage = ObjectStoreStorage::s3(&settings).unwrap();
        let started = std::time::Instant::now();
        assert!(storage.ready().await.is_err());
        let mut w = storage.writer("k").await.map(Some).unwrap_or(None);
        if let Some(w) = w.as_mut() {
            let _ = w.write(Bytes::from_static(b"x")).await;
        }
        if let Some(w) = w {
            assert!(w.finish().await.is_err());
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "retries are bounded"
        );
    }

    #[tokio::test]
    async fn a_prefixed_store_meets_the_contract_and_stays_under_its_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let fs = LocalFileSystem::new_with_prefix(dir.path()).unwrap();
        let storage = ObjectStoreStorage::new(Arc::new(fs), "tenant-a/");
        contract::run_all(&storage).await;
        assert!(
            dir.path()
                .join("tenant-a/ledgers/m_1/1/v1.csv.enc")
                .exists()
        );
    }
}
