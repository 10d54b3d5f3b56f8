//! Files that appear complete or not at all: written to a hidden temporary file beside the
//! target, synced, renamed into place, and the directory synced so the rename survives a crash.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// `dir/.name.partial-PID.ext`: hidden, this process's own (two processes writing the same file,
/// such as a run's report, never share a temporary), and keeping the extension so FFmpeg still
/// picks the muxer.
pub fn partial_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let ext = path.extension().map(|e| e.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.partial-{}.{ext}", std::process::id()))
}

/// Lets `write` fill the temporary file, then moves it into place; after a failure the temporary
/// file is removed and the target is untouched.
pub fn write_with(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = partial_path(path);
    if let Err(e) = write(&tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")));
    Ok(())
}

/// Writes `parts` one after another as the whole new content of `path`.
pub fn write_bytes(path: &Path, parts: &[&[u8]]) -> Result<()> {
    write_with(path, |tmp| {
        let mut f = std::fs::File::create(tmp).map_err(|e| Error::io(tmp, e))?;
        parts.iter().try_for_each(|p| f.write_all(p)).map_err(|e| Error::io(tmp, e))
    })
}

/// Makes renames inside `dir` durable (best effort: not every platform can sync a directory).
pub fn sync_dir(dir: &Path) {
    let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        write_bytes(&path, &[b"old"]).unwrap();
        let err = write_with(&path, |tmp| {
            std::fs::write(tmp, b"half").unwrap();
            Err(Error::io(tmp, std::io::Error::other("disk full")))
        });
        assert!(err.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert!(!partial_path(&path).exists());
        write_bytes(&path, &[b"n", b"ew"]).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
    }
}
