//! Where the files of a fleet repository come from: a directory, memory, or (in the
//! reconciler) a git commit's tree. The loader only needs to list a directory and read a
//! file with a size limit.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Why a file could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// No such file.
    #[error("not found")]
    NotFound,
    /// Larger than the limit.
    #[error("{size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// The file's size (or a lower bound).
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A symbolic link to a place outside the repository.
    #[error("symbolic link to {target}, outside the repository")]
    SymlinkOutside {
        /// Where the link points.
        target: String,
    },
    /// A directory, device, FIFO or socket.
    #[error("not a regular file")]
    NotAFile,
    /// Any other I/O error.
    #[error("{0}")]
    Io(String),
}

/// A read-only tree of files addressed by `/`-separated paths relative to its root.
pub trait FileTree {
    /// Names of the files (not directories) directly in `dir` (`""` is the root), sorted.
    /// A missing directory lists as empty.
    fn list(&self, dir: &str) -> Result<Vec<String>, ReadError>;
    /// The bytes of `path`, or [`ReadError::TooLarge`] if it holds more than `limit` bytes.
    fn read(&self, path: &str, limit: u64) -> Result<Vec<u8>, ReadError>;
    /// Whether `path` is a file of the tree.
    fn is_file(&self, path: &str) -> bool;
    /// Names of the directories directly in `dir`, sorted (for telling an operator about
    /// what is not read). A tree that cannot tell lists none.
    fn list_dirs(&self, _dir: &str) -> Result<Vec<String>, ReadError> {
        Ok(Vec::new())
    }
}

/// A directory on disk. Symbolic links are followed only when they stay inside it.
#[derive(Debug, Clone)]
pub struct DirTree {
    root: PathBuf,
}

impl DirTree {
    /// The tree rooted at `root`, which must be a directory.
    pub fn new(root: impl AsRef<Path>) -> std::io::Result<DirTree> {
        let root = root.as_ref().canonicalize()?;
        if !root.is_dir() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotADirectory,
                format!("{} is not a directory", root.display()),
            ));
        }
        Ok(DirTree { root })
    }

    /// The canonical root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn resolve(&self, path: &str) -> Result<PathBuf, ReadError> {
        if path.split('/').any(|seg| seg == ".." || seg.is_empty()) || path.starts_with('/') {
            return Err(ReadError::NotFound);
        }
        let full = self.root.join(path);
        let meta = std::fs::symlink_metadata(&full).map_err(io_err)?;
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&full)
                .map(|t| t.display().to_string())
                .unwrap_or_default();
            let real = full.canonicalize().map_err(|_| ReadError::SymlinkOutside {
                target: target.clone(),
            })?;
            if !real.starts_with(&self.root) {
                return Err(ReadError::SymlinkOutside { target });
            }
            return Ok(real);
        }
        Ok(full)
    }
}

fn io_err(e: std::io::Error) -> ReadError {
    match e.kind() {
        std::io::ErrorKind::NotFound => ReadError::NotFound,
        _ => ReadError::Io(e.to_string()),
    }
}

impl FileTree for DirTree {
    fn list(&self, dir: &str) -> Result<Vec<String>, ReadError> {
        let path = if dir.is_empty() {
            self.root.clone()
        } else {
            match self.resolve(dir) {
                Ok(p) => p,
                Err(ReadError::NotFound) => return Ok(Vec::new()),
                Err(e) => return Err(e),
            }
        };
        let entries = match std::fs::read_dir(&path) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err)?;
            let ft = entry.file_type().map_err(io_err)?;
            if ft.is_dir() {
                continue;
            }
            // Names that are not UTF-8 can't be coin names; list them lossily so the
            // loader reports them rather than skipping them.
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    fn list_dirs(&self, dir: &str) -> Result<Vec<String>, ReadError> {
        let path = if dir.is_empty() {
            self.root.clone()
        } else {
            match self.resolve(dir) {
                Ok(p) => p,
                Err(ReadError::NotFound) => return Ok(Vec::new()),
                Err(e) => return Err(e),
            }
        };
        let Ok(entries) = std::fs::read_dir(&path) else {
            return Ok(Vec::new());
        };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        Ok(names)
    }

    fn read(&self, path: &str, limit: u64) -> Result<Vec<u8>, ReadError> {
        let full = self.resolve(path)?;
        let meta = std::fs::metadata(&full).map_err(io_err)?;
        if !meta.is_file() {
            return Err(ReadError::NotAFile);
        }
        if meta.len() > limit {
            return Err(ReadError::TooLarge {
                size: meta.len(),
                limit,
            });
        }
        let file = std::fs::File::open(&full).map_err(io_err)?;
        let mut buf = Vec::new();
        // The file may have grown since `metadata`: never read more than limit + 1.
        file.take(limit + 1).read_to_end(&mut buf).map_err(io_err)?;
        if buf.len() as u64 > limit {
            return Err(ReadError::TooLarge {
                size: buf.len() as u64,
                limit,
            });
        }
        Ok(buf)
    }

    fn is_file(&self, path: &str) -> bool {
        self.resolve(path)
            .and_then(|p| std::fs::metadata(p).map_err(io_err))
            .is_ok_and(|m| m.is_file())
    }
}

/// Files in memory, keyed by path: for tests and for trees read from elsewhere (git).
#[derive(Debug, Clone, Default)]
pub struct MemTree {
    /// Path to content.
    pub files: BTreeMap<String, Vec<u8>>,
}

impl MemTree {
    /// An empty tree.
    pub fn new() -> MemTree {
        MemTree::default()
    }

    /// Add or replace a file.
    pub fn insert(&mut self, path: &str, content: impl Into<Vec<u8>>) -> &mut Self {
        self.files.insert(path.to_string(), content.into());
        self
    }
}

impl FileTree for MemTree {
    fn list(&self, dir: &str) -> Result<Vec<String>, ReadError> {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        Ok(self
            .files
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix))
            .filter(|rest| !rest.contains('/'))
            .map(str::to_string)
            .collect())
    }

    fn read(&self, path: &str, limit: u64) -> Result<Vec<u8>, ReadError> {
        let data = self.files.get(path).ok_or(ReadError::NotFound)?;
        if data.len() as u64 > limit {
            return Err(ReadError::TooLarge {
                size: data.len() as u64,
                limit,
            });
        }
        Ok(data.clone())
    }

    fn is_file(&self, path: &str) -> bool {
        self.files.contains_key(path)
    }

    fn list_dirs(&self, dir: &str) -> Result<Vec<String>, ReadError> {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let mut names: Vec<String> = self
            .files
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix))
            .filter_map(|rest| rest.split_once('/').map(|(d, _)| d.to_string()))
            .collect();
        names.dedup();
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_tree_refuses_links_that_leave_the_root() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.yaml"), "coin: x\n").unwrap();
        let repo = tempfile::tempdir().unwrap();
        std::fs::create_dir(repo.path().join("coins")).unwrap();
        std::fs::write(repo.path().join("coins/in.yaml"), "coin: in\n").unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("secret.yaml"),
            repo.path().join("coins/out.yaml"),
        )
        .unwrap();
        std::os::unix::fs::symlink("in.yaml", repo.path().join("coins/alias.yaml")).unwrap();
        let t = DirTree::new(repo.path()).unwrap();
        assert_eq!(
            t.list("coins").unwrap(),
            ["alias.yaml", "in.yaml", "out.yaml"]
        );
        assert!(matches!(
            t.read("coins/out.yaml", 100),
            Err(ReadError::SymlinkOutside { .. })
        ));
        assert_eq!(t.read("coins/alias.yaml", 100).unwrap(), b"coin: in\n");
        assert!(matches!(
            t.read("coins/in.yaml", 3),
            Err(ReadError::TooLarge { .. })
        ));
        assert_eq!(t.read("../x", 10), Err(ReadError::NotFound));
        assert_eq!(t.list("nope").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn mem_tree_lists_one_level() {
        let mut t = MemTree::new();
        t.insert("fleet.yaml", "a")
            .insert("coins/a.yaml", "b")
            .insert("coins/x/y.yaml", "c");
        assert_eq!(t.list("coins").unwrap(), ["a.yaml"]);
        assert_eq!(t.list("").unwrap(), ["fleet.yaml"]);
    }
}
