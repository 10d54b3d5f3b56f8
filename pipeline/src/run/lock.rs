//! One writer per run folder: an advisory lock on `RUN/.lock` (`flock`), held for as long as the
//! writing process lives. The kernel releases it when the process ends, however it ends, so a
//! SIGKILL never leaves a stale lock. The file itself only says who holds it (pid and start
//! time); its presence means nothing.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::events;

const LOCK_FILE: &str = ".lock";

/// The run folder's write lock, released on drop (or when the process dies).
#[derive(Debug)]
pub struct RunLock {
    _file: File,
    path: PathBuf,
}

impl RunLock {
    /// Takes the lock of the existing folder `dir` for `what` (e.g. "train"), or refuses at once
    /// naming the process that holds it.
    pub fn acquire(dir: &Path, what: &str) -> Result<Self> {
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).with_context(|| format!("cannot open the run lock {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let holder = if holder.is_empty() { "another process".to_owned() } else { holder.to_owned() };
                bail!("run folder {} is in use by {holder}; wait for it to finish, or stop it first (one writer per run)", dir.display());
            }
            Err(TryLockError::Error(e)) => return Err(e).with_context(|| format!("cannot lock {}", path.display())),
        }
        let holder = format!("`sid2 {what}` (pid {}, started at unix time {})", std::process::id(), events::now());
        file.set_len(0).and_then(|()| file.rewind()).and_then(|()| file.write_all(holder.as_bytes())).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(Self { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_refused_with_the_holder_and_the_lock_goes_with_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(dir.path(), "train").unwrap();
        let err = RunLock::acquire(dir.path(), "train").unwrap_err().to_string();
        assert!(err.contains("in use by `sid2 train`") && err.contains(&format!("pid {}", std::process::id())), "{err}");
        drop(first);
        RunLock::acquire(dir.path(), "train").unwrap();
    }
}
