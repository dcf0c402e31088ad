//! Durable writes into a local store's directory. `object_store`'s local backend writes and
//! renames without an fsync, so this adapter takes a finished file to disk itself, with
//! every directory entry that leads to it — and, for the objects small enough to be one
//! write, writes it itself too, so that the write, the rename and the fsyncs are one trip
//! to the blocking pool.
//!
//! A directory entry has to be fsynced once, not at every file below it: the directories
//! whose entries this process made durable are remembered, by device, inode and birth time
//! (a directory removed and made again under the same name may get the same inode number
//! back, never the same birth time; where the file system gives no birth time nothing is
//! remembered and every directory is synced each time). A directory is remembered only once
//! every entry above it is on disk too. A ledger's first
//! file then costs three fsyncs (the file, its new directory, the merchant's directory that
//! names it) instead of one for each directory up to the root.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write as _};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;
use object_store::path::Path as ObjectPath;

use super::StorageError;

/// Directories remembered at most; past it the memory starts again (a forgotten directory
/// costs one more fsync of its parent, never a missed one).
const REMEMBERED_DIRS: usize = 16_384;

/// A local store's directory and the directories under it whose entries are on disk.
pub(super) struct LocalDisk {
    root: PathBuf,
    /// Directory → its identity, for directories whose entry in their parent, and every
    /// entry above up to the root, was fsynced.
    durable: Mutex<HashMap<PathBuf, DirId>>,
}

impl LocalDisk {
    pub(super) fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            durable: Mutex::new(HashMap::new()),
        }
    }

    /// The file of `path` under the root.
    fn file_of(&self, path: &ObjectPath) -> PathBuf {
        let mut at = self.root.clone();
        for part in path.parts() {
            at.push(part.as_ref());
        }
        at
    }

    /// Writes `chunks` as the object `path`, durably: a staged file beside it (`name#N`,
    /// which `object_store` never lists) written and fsynced, renamed over the name, then
    /// the directory entries that lead to it taken to disk.
    pub(super) fn put(&self, path: &ObjectPath, chunks: &[Bytes]) -> Result<(), StorageError> {
        let dest = self.file_of(path);
        let (mut file, staged) = stage(&dest)?;
        let written = chunks
            .iter()
            .try_for_each(|c| file.write_all(c))
            .and_then(|()| file.sync_all())
            .map_err(|e| failed("write of", &staged, e))
            .and_then(|()| {
                drop(file);
                std::fs::rename(&staged, &dest).map_err(|e| failed("rename to", &dest, e))
            });
        if let Err(e) = written {
            let _ = std::fs::remove_file(&staged);
            return Err(e);
        }
        self.sync_entries(&dest)
    }

    /// Takes the finished file of `path` (written by `object_store`) to disk, with the
    /// directory entries that lead to it.
    pub(super) fn sync(&self, path: &ObjectPath) -> Result<(), StorageError> {
        let file = self.file_of(path);
        sync_path(&file)?;
        self.sync_entries(&file)
    }

    /// Fsyncs the directory holding `file` (its new entry), then each directory above whose
    /// own entry is not known to be on disk yet, up to the root. The directories walked are
    /// remembered only once the walk has ended without an error, so a failed fsync higher up
    /// (or a writer beside this one still walking) never leaves a directory remembered whose
    /// ancestors' entries may not be on disk.
    fn sync_entries(&self, file: &Path) -> Result<(), StorageError> {
        let mut dir = match file.parent() {
            Some(d) => d,
            None => return Ok(()),
        };
        sync_path(dir)?;
        let mut walked = Vec::new();
        while dir != self.root && dir.starts_with(&self.root) {
            let id = dir_id(dir)?;
            let known = id.is_some()
                && self
                    .durable
                    .lock()
                    .map(|d| d.get(dir) == id.as_ref())
                    .unwrap_or(false);
            if known {
                break;
            }
            let Some(parent) = dir.parent() else { break };
            sync_path(parent)?;
            if let Some(id) = id {
                walked.push((dir.to_path_buf(), id));
            }
            dir = parent;
        }
        if !walked.is_empty()
            && let Ok(mut durable) = self.durable.lock()
        {
            if durable.len() + walked.len() > REMEMBERED_DIRS {
                durable.clear();
            }
            durable.extend(walked);
        }
        Ok(())
    }
}

/// What tells one directory from another made later under the same name: device, inode
/// and birth time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DirId {
    dev: u64,
    ino: u64,
    born: std::time::SystemTime,
}

/// `dir`'s identity; `None` where the file system gives no birth time.
fn dir_id(dir: &Path) -> Result<Option<DirId>, StorageError> {
    let meta = std::fs::metadata(dir).map_err(|e| failed("stat of", dir, e))?;
    Ok(meta.created().ok().map(|born| DirId {
        dev: meta.dev(),
        ino: meta.ino(),
        born,
    }))
}

/// A new staged file beside `dest`, its directories made when missing.
fn stage(dest: &Path) -> Result<(File, PathBuf), StorageError> {
    let mut n = 1u32;
    let mut made_dirs = 0;
    loop {
        let mut staged = dest.as_os_str().to_owned();
        staged.push(format!("#{n}"));
        let staged = PathBuf::from(staged);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&staged)
        {
            Ok(f) => return Ok((f, staged)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => n += 1,
            // Made again a few times at most: a directory removed meanwhile by someone else.
            Err(e) if e.kind() == ErrorKind::NotFound && made_dirs < 3 => {
                made_dirs += 1;
                let parent = dest.parent().unwrap_or(dest);
                std::fs::create_dir_all(parent).map_err(|e| failed("creation of", parent, e))?;
            }
            Err(e) => return Err(failed("creation of", &staged, e)),
        }
        if n > 1_000 {
            return Err(StorageError::Backend(format!(
                "no free staging name beside {}",
                dest.display()
            )));
        }
    }
}

/// Every path fsynced, and a path whose fsync fails (tests only).
#[cfg(test)]
static FSYNC_LOG: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
#[cfg(test)]
static FAIL_ON: Mutex<Option<PathBuf>> = Mutex::new(None);

fn sync_path(path: &Path) -> Result<(), StorageError> {
    #[cfg(test)]
    {
        FSYNC_LOG.lock().unwrap().push(path.to_path_buf());
        if FAIL_ON.lock().unwrap().as_deref() == Some(path) {
            return Err(failed("fsync of", path, std::io::Error::other("injected")));
        }
    }
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| failed("fsync of", path, e))
}

fn failed(what: &str, path: &Path, e: std::io::Error) -> StorageError {
    StorageError::Backend(format!("{what} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_put_writes_the_object_and_leaves_no_staged_file() {
        let dir = tempfile::tempdir().unwrap();
        let disk = LocalDisk::new(dir.path());
        let path = ObjectPath::from("ledgers/m_1/7/v1.a1.csv.enc");
        disk.put(
            &path,
            &[Bytes::from_static(b"ab"), Bytes::from_static(b"cd")],
        )
        .unwrap();
        let file = dir.path().join("ledgers/m_1/7/v1.a1.csv.enc");
        assert_eq!(std::fs::read(&file).unwrap(), b"abcd");
        let names: Vec<_> = std::fs::read_dir(file.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["v1.a1.csv.enc"]);
        // Every directory from the file's up to the root is now known to be on disk.
        let durable = disk.durable.lock().unwrap();
        for d in ["ledgers", "ledgers/m_1", "ledgers/m_1/7"] {
            assert!(durable.contains_key(&dir.path().join(d)), "{d}");
        }
    }

    #[test]
    fn a_put_replaces_an_object_and_skips_a_staging_name_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let disk = LocalDisk::new(dir.path());
        let path = ObjectPath::from("a/b.enc");
        disk.put(&path, &[Bytes::from_static(b"old")]).unwrap();
        std::fs::write(dir.path().join("a/b.enc#1"), b"someone else's").unwrap();
        disk.put(&path, &[Bytes::from_static(b"new")]).unwrap();
        assert_eq!(std::fs::read(dir.path().join("a/b.enc")).unwrap(), b"new");
        assert_eq!(
            std::fs::read(dir.path().join("a/b.enc#1")).unwrap(),
            b"someone else's"
        );
    }

    #[test]
    fn a_directory_made_again_is_synced_again() {
        let dir = tempfile::tempdir().unwrap();
        let disk = LocalDisk::new(dir.path());
        disk.put(&ObjectPath::from("x/y/1.enc"), &[Bytes::from_static(b"1")])
            .unwrap();
        let before = disk.durable.lock().unwrap()[&dir.path().join("x/y")];
        // Removed and made again at once: ext4 may well give the same inode number back.
        std::fs::remove_dir_all(dir.path().join("x/y")).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        disk.put(&ObjectPath::from("x/y/2.enc"), &[Bytes::from_static(b"2")])
            .unwrap();
        let after = disk.durable.lock().unwrap()[&dir.path().join("x/y")];
        assert_ne!(
            before, after,
            "the new directory is not taken for the old one"
        );
        assert_eq!(Some(after), dir_id(&dir.path().join("x/y")).unwrap());
    }

    #[test]
    fn a_failed_fsync_above_leaves_nothing_remembered_below() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let disk = LocalDisk::new(&root);
        *FAIL_ON.lock().unwrap() = Some(root.join("x"));
        let err = disk
            .put(
                &ObjectPath::from("x/y/z/1.enc"),
                &[Bytes::from_static(b"1")],
            )
            .unwrap_err();
        assert!(err.to_string().contains("injected"), "{err}");
        *FAIL_ON.lock().unwrap() = None;
        assert!(disk.durable.lock().unwrap().is_empty());
        disk.put(
            &ObjectPath::from("x/y/z/2.enc"),
            &[Bytes::from_static(b"2")],
        )
        .unwrap();
        let synced: Vec<PathBuf> = FSYNC_LOG
            .lock()
            .unwrap()
            .iter()
            .filter_map(|p| p.strip_prefix(&root).ok().map(Path::to_path_buf))
            .collect();
        let x_synced = synced.iter().filter(|p| p.as_os_str() == "x").count();
        assert_eq!(x_synced, 2, "the second write fsynced x again: {synced:?}");
    }

    #[test]
    fn a_failed_write_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let disk = LocalDisk::new(dir.path());
        // A directory where the object's name should be: the rename fails.
        std::fs::create_dir_all(dir.path().join("k/obj.enc/inside")).unwrap();
        let err = disk
            .put(&ObjectPath::from("k/obj.enc"), &[Bytes::from_static(b"z")])
            .unwrap_err();
        assert!(err.to_string().contains("rename to"), "{err}");
        let names: Vec<_> = std::fs::read_dir(dir.path().join("k"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["obj.enc"]);
    }
}
