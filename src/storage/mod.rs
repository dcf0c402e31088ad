//! The object storage port: encrypted ledger files by key. Only ciphertext ever passes
//! through here (the pipeline encrypts before writing, the download decrypts after reading).
//! One adapter over the `object_store` crate serves local directories (`file://`) and, later,
//! S3; it never deletes anything.

#[cfg(test)]
pub mod contract;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, WriteMultipart};

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
    /// Makes the object visible.
    async fn finish(self: Box<Self>) -> Result<(), StorageError>;
    /// Gives up; no object appears.
    async fn abort(self: Box<Self>);
}

/// The object storage port.
#[async_trait]
pub trait ObjectStorage: Send + Sync {
    /// Starts an upload to `key`.
    async fn writer(&self, key: &str) -> Result<Box<dyn ObjectWriter>, StorageError>;
    /// Streams an object.
    async fn read(&self, key: &str) -> Result<ByteStream, StorageError>;
    /// Size of an object, `None` when absent.
    async fn size(&self, key: &str) -> Result<Option<u64>, StorageError>;
    /// Every key under `prefix` (for tests and audits).
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError>;
    /// Answers when the backend answers.
    async fn ready(&self) -> Result<(), StorageError>;
}

/// Part size of multipart uploads: S3's minimum is 5 MiB.
const PART_SIZE: usize = 5 * 1024 * 1024;
/// Parts in flight per upload; with `PART_SIZE` this bounds an upload's memory.
const MAX_PARTS_IN_FLIGHT: usize = 2;

/// [`ObjectStorage`] over any `object_store` backend, under a key prefix.
pub struct ObjectStoreStorage {
    store: Arc<dyn ObjectStore>,
    prefix: String,
}

impl ObjectStoreStorage {
    /// A storage over `store`; keys are placed under `prefix` (may be empty).
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str) -> Self {
        Self {
            store,
            prefix: prefix.trim_matches('/').to_owned(),
        }
    }

    /// A local directory, created when missing.
    pub fn local(dir: &std::path::Path) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StorageError::Config(format!("cannot create {}: {e}", dir.display())))?;
        let fs = LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| StorageError::Config(e.to_string()))?;
        Ok(Self::new(Arc::new(fs), ""))
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

struct MultipartWriter {
    inner: WriteMultipart,
}

#[async_trait]
impl ObjectWriter for MultipartWriter {
    async fn write(&mut self, bytes: Bytes) -> Result<(), StorageError> {
        self.inner.wait_for_capacity(MAX_PARTS_IN_FLIGHT).await?;
        self.inner.put(bytes);
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<(), StorageError> {
        self.inner.finish().await?;
        Ok(())
    }

    async fn abort(self: Box<Self>) {
        if let Err(e) = self.inner.abort().await {
            tracing::warn!(error = %e, "aborting an upload failed; the backend may keep an incomplete upload");
        }
    }
}

#[async_trait]
impl ObjectStorage for ObjectStoreStorage {
    async fn writer(&self, key: &str) -> Result<Box<dyn ObjectWriter>, StorageError> {
        let upload = self.store.put_multipart(&self.path(key)).await?;
        Ok(Box::new(MultipartWriter {
            inner: WriteMultipart::new_with_chunk_size(upload, PART_SIZE),
        }))
    }

    async fn read(&self, key: &str) -> Result<ByteStream, StorageError> {
        let result = self.store.get(&self.path(key)).await?;
        Ok(result
            .into_stream()
            .map(|r| r.map_err(StorageError::from))
            .boxed())
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

    async fn ready(&self) -> Result<(), StorageError> {
        // A cheap listing proves the backend answers and the credentials are accepted.
        let prefix = (!self.prefix.is_empty()).then(|| ObjectPath::from(self.prefix.as_str()));
        self.store.list_with_delimiter(prefix.as_ref()).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_local_directory_meets_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        let storage = ObjectStoreStorage::local(dir.path()).unwrap();
        contract::run_all(&storage).await;
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
