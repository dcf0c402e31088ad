//! Reading an object in the pieces its reader asks for.
//!
//! A download reads one encrypted segment at a time, and a segment that arrives in a buffer
//! of its own is decrypted where it lies (crypto's reader). A local file is read in exactly
//! the sizes asked for, each piece in a fresh buffer, straight from the page cache on the
//! runtime thread when it is there (`preadv2` with `RWF_NOWAIT`, which refuses rather than
//! waits for the disk), and on the blocking pool when it is not. An object arriving over the
//! network comes in the pieces it arrived in, cut at the size asked for.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use rustix::io::{Errno, IoSliceMut, ReadWriteFlags};

use super::{ByteStream, StorageError};

/// An object being read.
#[async_trait]
pub trait ObjectReader: Send {
    /// The next piece: at least one byte and at most `want` (read as 1 when 0), `None` once
    /// the object ended. A local file gives `want` bytes unless the object ends first, or
    /// (rarely) part of them were in the page cache; a remote object gives what arrived.
    async fn read(&mut self, want: usize) -> Result<Option<Bytes>, StorageError>;

    /// The rest of the object, for tests and small objects.
    async fn read_to_end(&mut self) -> Result<Vec<u8>, StorageError> {
        let mut out = Vec::new();
        while let Some(piece) = self.read(1 << 20).await? {
            out.extend_from_slice(&piece);
        }
        Ok(out)
    }
}

/// The largest piece of a local file read at once: under the allocator's mmap threshold
/// (128 KiB, set in main.rs), so pieces come from the heap and are reused, not mapped and
/// faulted in anew.
const MAX_FILE_PIECE: usize = 120 << 10;

/// A local file, read at increasing offsets.
pub(super) struct FileReader {
    file: Arc<File>,
    offset: u64,
    /// false once `RWF_NOWAIT` was refused as unsupported (an old kernel or a file system
    /// without it): every piece is then read on the blocking pool.
    from_cache: bool,
}

impl FileReader {
    pub(super) fn new(file: File) -> Self {
        Self {
            file: Arc::new(file),
            offset: 0,
            from_cache: true,
        }
    }

    /// Reads into `piece` at the current offset without waiting for the disk: `None` when
    /// that would wait.
    fn read_cached(&mut self, piece: &mut [u8]) -> Result<Option<usize>, StorageError> {
        let read = rustix::io::preadv2(
            &*self.file,
            &mut [IoSliceMut::new(piece)],
            self.offset,
            ReadWriteFlags::NOWAIT,
        );
        match read {
            Ok(n) => Ok(Some(n)),
            Err(Errno::AGAIN | Errno::INTR) => Ok(None),
            Err(Errno::OPNOTSUPP | Errno::NOSYS | Errno::INVAL) => {
                self.from_cache = false;
                Ok(None)
            }
            Err(e) => Err(read_error(e.into())),
        }
    }
}

fn read_error(e: std::io::Error) -> StorageError {
    StorageError::Backend(format!("reading a local object: {e}"))
}

#[async_trait]
impl ObjectReader for FileReader {
    async fn read(&mut self, want: usize) -> Result<Option<Bytes>, StorageError> {
        let mut piece = BytesMut::zeroed(want.clamp(1, MAX_FILE_PIECE));
        let cached = if self.from_cache {
            self.read_cached(&mut piece)?
        } else {
            None
        };
        let n = match cached {
            Some(n) => n,
            None => {
                let (file, offset) = (self.file.clone(), self.offset);
                let (read, n) = tokio::task::spawn_blocking(move || {
                    let n = file.read_at(&mut piece, offset);
                    (piece, n)
                })
                .await
                .map_err(|e| read_error(std::io::Error::other(e)))?;
                piece = read;
                n.map_err(read_error)?
            }
        };
        if n == 0 {
            return Ok(None);
        }
        piece.truncate(n);
        self.offset += n as u64;
        Ok(Some(piece.freeze()))
    }
}

/// An object arriving as a stream of chunks, handed out at most `want` bytes at a time.
pub struct StreamReader {
    chunks: ByteStream,
    held: Bytes,
}

impl StreamReader {
    pub fn new(chunks: ByteStream) -> Self {
        Self {
            chunks,
            held: Bytes::new(),
        }
    }
}

#[async_trait]
impl ObjectReader for StreamReader {
    async fn read(&mut self, want: usize) -> Result<Option<Bytes>, StorageError> {
        while self.held.is_empty() {
            match self.chunks.next().await {
                Some(chunk) => self.held = chunk?,
                None => return Ok(None),
            }
        }
        // Taking all of it hands the chunk over whole (still its buffer's only user).
        Ok(Some(self.held.split_to(want.clamp(1, self.held.len()))))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[tokio::test]
    async fn a_file_is_read_in_the_pieces_asked_for() {
        let mut file = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        file.write_all(&data).unwrap();
        let mut reader = FileReader::new(file);
        let mut back = Vec::new();
        for want in [6, 70, 65_552, 0, 1 << 20] {
            let piece = reader.read(want).await.unwrap().unwrap();
            assert_eq!(piece.len(), want.clamp(1, MAX_FILE_PIECE));
            back.extend_from_slice(&piece);
        }
        back.extend(reader.read_to_end().await.unwrap());
        assert_eq!(back, data);
        assert!(reader.read(10).await.unwrap().is_none());

        // Without the page-cache path, the blocking pool reads the same.
        let mut reader = FileReader::new(tempfile::tempfile().unwrap());
        reader.file.write_all_at(&data, 0).unwrap();
        reader.from_cache = false;
        assert_eq!(reader.read(7).await.unwrap().unwrap(), data[..7]);
        assert_eq!(reader.read_to_end().await.unwrap(), data[7..]);
    }

    #[tokio::test]
    async fn a_stream_is_cut_at_the_size_asked_for() {
        let chunks: Vec<Result<Bytes, StorageError>> = vec![
            Ok(Bytes::from_static(b"hello")),
            Ok(Bytes::new()),
            Ok(Bytes::from_static(b" world")),
            Err(StorageError::Backend("cut".into())),
        ];
        let mut reader = StreamReader::new(futures::stream::iter(chunks).boxed());
        assert_eq!(reader.read(3).await.unwrap().unwrap(), "hel");
        assert_eq!(reader.read(100).await.unwrap().unwrap(), "lo");
        assert_eq!(reader.read(0).await.unwrap().unwrap(), " ");
        assert_eq!(reader.read(100).await.unwrap().unwrap(), "world");
        assert!(matches!(
            reader.read(1).await,
            Err(StorageError::Backend(_))
        ));
        assert!(reader.read(1).await.unwrap().is_none());
    }
}
