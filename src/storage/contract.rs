//! The object storage contract, written against the trait; every adapter runs [`run_all`].

use bytes::Bytes;

use super::{ObjectStorage, StorageError};

async fn read_all(storage: &dyn ObjectStorage, key: &str) -> Result<Vec<u8>, StorageError> {
    storage.read(key).await?.read_to_end().await
}

async fn put(storage: &dyn ObjectStorage, key: &str, chunks: &[Vec<u8>]) {
    let mut w = storage.writer(key).await.unwrap();
    for c in chunks {
        w.write(Bytes::from(c.clone())).await.unwrap();
    }
    w.finish().await.unwrap();
}

/// Runs every check against an empty storage.
pub async fn run_all(storage: &dyn ObjectStorage) {
    storage.ready().await.unwrap();

    // Round trip of a small and a multi-part object.
    put(
        storage,
        "ledgers/m_1/1/v1.csv.enc",
        &[b"hello ".to_vec(), b"world".to_vec()],
    )
    .await;
    assert_eq!(
        read_all(storage, "ledgers/m_1/1/v1.csv.enc").await.unwrap(),
        b"hello world"
    );
    assert_eq!(
        storage.size("ledgers/m_1/1/v1.csv.enc").await.unwrap(),
        Some(11)
    );
    let big: Vec<Vec<u8>> = (0..48u8).map(|i| vec![i; 256 * 1024]).collect();
    put(storage, "ledgers/m_1/2/v1.csv.enc", &big).await;
    let back = read_all(storage, "ledgers/m_1/2/v1.csv.enc").await.unwrap();
    assert_eq!(back.len(), 48 * 256 * 1024);
    assert!(
        back.chunks(256 * 1024)
            .enumerate()
            .all(|(i, c)| c.iter().all(|b| *b as usize == i))
    );

    // Nothing is visible before finish; an aborted upload leaves nothing.
    let mut w = storage.writer("ledgers/m_1/3/v1.csv.enc").await.unwrap();
    w.write(Bytes::from_static(b"partial")).await.unwrap();
    assert!(matches!(
        storage.read("ledgers/m_1/3/v1.csv.enc").await,
        Err(StorageError::NotFound(_))
    ));
    w.abort().await;
    assert_eq!(
        storage.size("ledgers/m_1/3/v1.csv.enc").await.unwrap(),
        None
    );

    // Missing keys are NotFound, listing is by prefix, a rewrite replaces.
    assert!(matches!(
        storage.read("nope").await,
        Err(StorageError::NotFound(_))
    ));
    put(storage, "ledgers/m_2/9/v1.csv.enc", &[b"x".to_vec()]).await;
    assert_eq!(
        storage.list("ledgers/m_1").await.unwrap(),
        ["ledgers/m_1/1/v1.csv.enc", "ledgers/m_1/2/v1.csv.enc"]
    );
    put(storage, "ledgers/m_2/9/v1.csv.enc", &[b"second".to_vec()]).await;
    assert_eq!(
        read_all(storage, "ledgers/m_2/9/v1.csv.enc").await.unwrap(),
        b"second"
    );
}
