use std::path::PathBuf;

/// Errors name the file they are about.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An input (clip, image) that cannot be used; data preparation skips it and reports it.
    #[error("{path}: {reason}")]
    Input { path: PathBuf, reason: String },
    /// A file this crate reads or writes for its own bookkeeping (shard, manifest, output).
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    /// A file of ours that is damaged or of another version.
    #[error("{path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn input(path: impl Into<PathBuf>, reason: impl ToString) -> Self {
        Self::Input { path: path.into(), reason: reason.to_string() }
    }
    pub fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        Self::Io { path: path.into(), error }
    }
    pub fn corrupt(path: impl Into<PathBuf>, reason: impl ToString) -> Self {
        Self::Corrupt { path: path.into(), reason: reason.to_string() }
    }
}
