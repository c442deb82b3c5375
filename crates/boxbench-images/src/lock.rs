//! The advisory lock (`flock`) that makes building safe when two processes or tests build into the
//! same directory at once: the second waits for the first and then finds its artefacts up to date.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// The lock file could not be opened or locked.
#[derive(Debug, thiserror::Error)]
#[error("cannot lock {path}: {reason}")]
pub struct LockError {
    path: PathBuf,
    reason: String,
}

/// An exclusive lock on a lock file, held until dropped.
#[derive(Debug)]
pub(crate) struct DirLock {
    _flock: Flock<File>,
}

impl DirLock {
    /// Locks `path` (created if missing), calling `on_wait` first if another holder makes us wait.
    pub(crate) fn acquire(path: &Path, on_wait: impl FnOnce()) -> Result<Self, LockError> {
        let fail = |reason: String| LockError { path: path.to_owned(), reason };
        let file =
            OpenOptions::new().create(true).truncate(false).write(true).open(path).map_err(|e| fail(e.to_string()))?;
        let file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(flock) => return Ok(Self { _flock: flock }),
            Err((file, Errno::EWOULDBLOCK)) => file,
            Err((_, errno)) => return Err(fail(errno.desc().to_owned())),
        };
        on_wait();
        let flock = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| fail(errno.desc().to_owned()))?;
        Ok(Self { _flock: flock })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, mpsc};

    #[test]
    fn second_holder_waits_until_the_first_releases() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".lock");
        let first = DirLock::acquire(&path, || panic!("nobody holds it yet")).unwrap();
        let waited = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let thread = {
            let (path, waited) = (path.clone(), waited.clone());
            std::thread::spawn(move || {
                let _second = DirLock::acquire(&path, || {
                    waited.store(true, Ordering::SeqCst);
                    tx.send(()).unwrap();
                })
                .unwrap();
            })
        };
        rx.recv().unwrap();
        drop(first);
        thread.join().unwrap();
        assert!(waited.load(Ordering::SeqCst));
    }

    #[test]
    fn unopenable_lock_file_is_named() {
        let err = DirLock::acquire(Path::new("/nonexistent-dir/.lock"), || {}).unwrap_err();
        assert!(err.to_string().contains("/nonexistent-dir/.lock"));
    }
}
