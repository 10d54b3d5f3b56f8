//! Paths from the command line: files that must be files, and outputs that must never land on
//! what the command reads or inside a run's `checkpoints/` (unless `--overwrite` says so). Paths
//! are compared after resolving `.`, `..` and symbolic links.

use std::path::{Component, Path, PathBuf};

use anyhow::{Result, bail};

/// `path` made absolute with `.`, `..` and symbolic links resolved as far as it exists; the part
/// that does not exist yet is appended as given.
pub fn resolved(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let parts: Vec<Component<'_>> = absolute.components().collect();
    for split in (1..=parts.len()).rev() {
        let Ok(mut out) = parts[..split].iter().collect::<PathBuf>().canonicalize() else { continue };
        for part in &parts[split..] {
            match part {
                Component::ParentDir => {
                    out.pop();
                }
                Component::CurDir => {}
                other => out.push(other.as_os_str()),
            }
        }
        return out;
    }
    absolute
}

/// `flag`'s value must be an existing file: a folder, or nothing there, is named as such.
pub fn existing_file(flag: &str, path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => bail!("{flag} {}: is a folder, expected a file", path.display()),
        Ok(_) => Ok(()),
        Err(e) => bail!("{flag} {}: {}", path.display(), io_words(&e)),
    }
}

/// `flag`'s value must be an existing folder.
pub fn existing_folder(flag: &str, path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => bail!("{flag} {}: is a file, expected a folder", path.display()),
        Err(e) => bail!("{flag} {}: {}", path.display(), io_words(&e)),
    }
}

/// A short reason for an I/O error on a path the user gave.
pub fn io_words(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or folder".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// The run folder whose `checkpoints/` holds `path`, if any.
fn inside_checkpoints(path: &Path) -> Option<PathBuf> {
    path.ancestors().skip(1).find(|a| a.file_name().is_some_and(|n| n == "checkpoints") && a.parent().is_some_and(|run| run.join("config.toml").is_file())).and_then(|a| a.parent().map(Path::to_owned))
}

/// Refuses the output file `out` of `flag` when it is one of `inputs` or lies inside a run's
/// `checkpoints/`, unless `overwrite`.
pub fn check_output_file(flag: &str, out: &Path, inputs: &[&Path], overwrite: bool) -> Result<()> {
    if overwrite {
        return Ok(());
    }
    let target = resolved(out);
    if let Some(input) = inputs.iter().find(|i| resolved(i) == target) {
        bail!("{flag} {}: is an input of this command ({}); choose another path (or pass --overwrite)", out.display(), input.display());
    }
    refuse_checkpoints(flag, out, &target)
}

/// Refuses the output folder `out` of `flag` when a file of `inputs` sits in it under a name the
/// command writes (`writes` says which names), or when it lies inside a run's `checkpoints/`,
/// unless `overwrite`.
pub fn check_output_dir(flag: &str, out: &Path, writes: impl Fn(&str) -> bool, inputs: &[&Path], overwrite: bool) -> Result<()> {
    if overwrite {
        return Ok(());
    }
    let target = resolved(out);
    for input in inputs {
        let input_path = resolved(input);
        let name = input_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if input_path.parent() == Some(target.as_path()) && writes(&name) {
            bail!("{flag} {}: would overwrite {}, an input of this command; choose another folder (or pass --overwrite)", out.display(), input.display());
        }
    }
    refuse_checkpoints(flag, out, &target.join("x"))
}

fn refuse_checkpoints(flag: &str, out: &Path, target: &Path) -> Result<()> {
    if let Some(run) = inside_checkpoints(target) {
        bail!("{flag} {}: is inside the checkpoints of run {}, which only `sid2 train` writes; choose a path outside it (or pass --overwrite)", out.display(), run.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_on_inputs_or_in_checkpoints_are_refused_after_resolving() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        std::fs::create_dir_all(run.join("checkpoints/samples-8")).unwrap();
        std::fs::write(run.join("config.toml"), "").unwrap();
        let weights = run.join("checkpoints/samples-8/model.safetensors");
        std::fs::write(&weights, "w").unwrap();
        // The same file spelled another way, and a new file inside the checkpoints.
        let twisted = dir.path().join("run/checkpoints/../checkpoints/samples-8/./model.safetensors");
        let err = check_output_file("--to", &twisted, &[&weights], false).unwrap_err().to_string();
        assert!(err.contains("is an input"), "{err}");
        let err = check_output_file("--to", &run.join("checkpoints/new/w.safetensors"), &[], false).unwrap_err().to_string();
        assert!(err.contains("inside the checkpoints of run"), "{err}");
        check_output_file("--to", &run.join("w.safetensors"), &[&weights], false).unwrap();
        check_output_file("--to", &weights, &[&weights], true).unwrap();
        // A folder output whose written names would replace an input.
        let real = dir.path().join("real.bin");
        std::fs::write(&real, "r").unwrap();
        let writes = |n: &str| n == "real.bin";
        let err = check_output_dir("--out", dir.path(), writes, &[&real], false).unwrap_err().to_string();
        assert!(err.contains("would overwrite"), "{err}");
        check_output_dir("--out", &dir.path().join("o"), writes, &[&real], false).unwrap();
        let err = check_output_dir("--out", &run.join("checkpoints"), writes, &[], false).unwrap_err().to_string();
        assert!(err.contains("inside the checkpoints"), "{err}");
    }

    #[test]
    fn a_folder_given_for_a_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = existing_file("--pred", dir.path()).unwrap_err().to_string();
        assert!(err.contains("--pred") && err.contains("is a folder, expected a file"), "{err}");
        let err = existing_file("--pred", &dir.path().join("nope")).unwrap_err().to_string();
        assert!(err.contains("no such file"), "{err}");
    }
}
