//! Polling files for changes by content.
//!
//! Kubernetes updates mounted Secrets and ConfigMaps by swapping a `..data` symlink, which
//! file-level inotify misses; reading the files again every few seconds and comparing their
//! bytes catches every kind of update (symlink swap, rename, in-place write) at the cost of a
//! couple of small reads.

use std::path::PathBuf;

/// What one poll saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Poll {
    /// Same bytes as last time (or the same read error as last time).
    Unchanged,
    /// New bytes, one entry per watched file, in order.
    Changed(Vec<Vec<u8>>),
    /// A file could not be read (reported once per distinct error).
    Failed(String),
}

/// A set of files read together (a certificate and its key, or one policy file).
#[derive(Debug)]
pub struct Watched {
    paths: Vec<PathBuf>,
    last: Option<Vec<Vec<u8>>>,
    last_error: Option<String>,
}

impl Watched {
    /// Watches these files.
    pub fn new(paths: Vec<PathBuf>) -> Self {
        Self {
            paths,
            last: None,
            last_error: None,
        }
    }

    /// The watched files.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Reads every file; says whether their content changed since the last poll.
    pub async fn poll(&mut self) -> Poll {
        let mut contents = Vec::with_capacity(self.paths.len());
        for p in &self.paths {
            match tokio::fs::read(p).await {
                Ok(bytes) => contents.push(bytes),
                Err(e) => {
                    let msg = format!("cannot read {}: {e}", p.display());
                    if self.last_error.as_deref() == Some(msg.as_str()) {
                        return Poll::Unchanged;
                    }
                    self.last_error = Some(msg.clone());
                    return Poll::Failed(msg);
                }
            }
        }
        self.last_error = None;
        if self.last.as_ref() == Some(&contents) {
            return Poll::Unchanged;
        }
        self.last = Some(contents.clone());
        Poll::Changed(contents)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[tokio::test]
    async fn reports_changes_and_errors_once() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a");
        let mut w = Watched::new(vec![f.clone()]);
        assert!(matches!(w.poll().await, Poll::Failed(_)));
        assert_eq!(
            w.poll().await,
            Poll::Unchanged,
            "same error is not repeated"
        );
        std::fs::write(&f, "1").unwrap();
        assert_eq!(w.poll().await, Poll::Changed(vec![b"1".to_vec()]));
        assert_eq!(w.poll().await, Poll::Unchanged);
        // A symlink swap, as a Secret volume does.
        let g = dir.path().join("b");
        std::fs::write(&g, "2").unwrap();
        std::fs::remove_file(&f).unwrap();
        std::os::unix::fs::symlink(&g, &f).unwrap();
        assert_eq!(w.poll().await, Poll::Changed(vec![b"2".to_vec()]));
    }
}
