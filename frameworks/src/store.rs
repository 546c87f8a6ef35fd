//! Durable state of a hosted framework: one JSON document, replaced atomically (write a
//! temp file, fsync it, rename it over the old one, fsync the directory), so a crash leaves
//! either the old or the new document, never a torn one.

use std::io::Write;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Why a state document could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}; check the disk and the work dir permissions")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} cannot be decoded ({message}); move it aside to start from an empty state")]
    Corrupt { path: PathBuf, message: String },
}

/// A JSON document of type `T` at one path.
#[derive(Debug, Clone)]
pub struct JsonStore<T> {
    path: PathBuf,
    _doc: PhantomData<fn() -> T>,
}

impl<T: Serialize + DeserializeOwned + Default> JsonStore<T> {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        JsonStore {
            path: path.into(),
            _doc: PhantomData,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored document, or `T::default()` when there is none yet.
    pub fn load(&self) -> Result<T, StoreError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(T::default()),
            Err(source) => {
                return Err(StoreError::Read {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
            path: self.path.clone(),
            message: e.to_string(),
        })
    }

    /// Replaces the document durably.
    pub fn save(&self, doc: &T) -> Result<(), StoreError> {
        let write = |source| StoreError::Write {
            path: self.path.clone(),
            source,
        };
        let bytes = serde_json::to_vec_pretty(doc)
            .map_err(|e| write(std::io::Error::other(e.to_string())))?;
        let dir = self
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(write)?;
        let tmp = self.path.with_extension("json.tmp");
        {
            let mut f = std::fs::File::create(&tmp).map_err(write)?;
            f.write_all(&bytes).map_err(write)?;
            f.sync_all().map_err(write)?;
        }
        std::fs::rename(&tmp, &self.path).map_err(write)?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(write)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, serde::Deserialize, Default, Debug, PartialEq)]
    struct Doc {
        n: u32,
    }

    #[test]
    fn missing_is_default_and_saves_survive_reopen() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let path = dir.path().join("sub").join("doc.json");
        let store = JsonStore::<Doc>::new(&path);
        assert_eq!(store.load().ok(), Some(Doc::default()));
        store
            .save(&Doc { n: 7 })
            .unwrap_or_else(|e| panic!("save: {e}"));
        let again = JsonStore::<Doc>::new(&path);
        assert_eq!(again.load().ok(), Some(Doc { n: 7 }));
        assert!(!path.with_extension("json.tmp").exists());
    }

    #[test]
    fn corrupt_document_is_reported() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let path = dir.path().join("doc.json");
        std::fs::write(&path, "{not json").unwrap_or_else(|e| panic!("write: {e}"));
        match JsonStore::<Doc>::new(&path).load() {
            Err(StoreError::Corrupt { message, .. }) => assert!(!message.is_empty()),
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }
}
