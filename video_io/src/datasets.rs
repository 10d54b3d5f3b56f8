//! Where inputs come from: Kinetics-600 (CSV annotations and the usual downloaded layout), folders
//! of videos, and ImageNet-style folders of images.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::decode::TimeRange;
use crate::error::{Error, Result};

/// One thing to decode.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Input {
    pub path: PathBuf,
    pub label: i32,
    pub kind: InputKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum InputKind {
    /// A video, optionally only the frames in a time range.
    Video { range: TimeRange },
    /// A still image (a clip of one frame).
    Image,
}

/// Inputs found, with their class names and what could not be listed.
#[derive(Clone, Debug, Default)]
pub struct Listing {
    pub inputs: Vec<Input>,
    pub classes: Vec<String>,
    /// Expected inputs that do not exist (e.g. Kinetics rows never downloaded).
    pub missing: Vec<PathBuf>,
    /// Entries that could not be read, with the reason.
    pub unreadable: Vec<(PathBuf, String)>,
}

const VIDEO_EXTENSIONS: &[&str] = &["mp4", "avi", "webm", "mkv", "mov", "m4v"];
const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png"];

/// A class list, one name per line (mmaction2's `label_map_k600.txt`); blank lines ignored.
pub fn read_class_list(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let classes: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect();
    if classes.is_empty() {
        return Err(Error::corrupt(path, "class list is empty"));
    }
    Ok(classes)
}

/// One row of the official Kinetics CSV (`label,youtube_id,time_start,time_end,split`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct KineticsRow {
    pub label: String,
    pub youtube_id: String,
    pub time_start: u32,
    pub time_end: u32,
    pub split: String,
}

impl KineticsRow {
    /// `<split>/<label>/<youtube_id>_<start:06>_<end:06>.mp4`, the layout of the common download
    /// scripts (activitynet's crawler and its forks).
    pub fn relative_path(&self) -> PathBuf {
        PathBuf::from(&self.split).join(&self.label).join(format!("{}_{:06}_{:06}.mp4", self.youtube_id, self.time_start, self.time_end))
    }
}

/// The columns of the official Kinetics CSVs.
const KINETICS_COLUMNS: [&str; 5] = ["label", "youtube_id", "time_start", "time_end", "split"];

/// The rows of a Kinetics annotation CSV; a file without its columns or without rows is refused.
pub fn read_kinetics_csv(path: &Path) -> Result<Vec<KineticsRow>> {
    let mut reader = csv::Reader::from_path(path).map_err(|e| Error::corrupt(path, e))?;
    let headers = reader.headers().map_err(|e| Error::corrupt(path, format!("not a Kinetics annotation CSV ({e})")))?.clone();
    if let Some(column) = KINETICS_COLUMNS.iter().find(|c| !headers.iter().any(|h| h.trim() == **c)) {
        return Err(Error::corrupt(path, format!("not a Kinetics annotation CSV: no `{column}` column (expected {})", KINETICS_COLUMNS.join(","))));
    }
    let rows: Vec<KineticsRow> = reader
        .deserialize()
        .enumerate()
        .map(|(i, row)| row.map_err(|e| Error::corrupt(path, format!("row {}: {e}", i + 2))))
        .collect::<Result<_>>()?;
    if rows.is_empty() {
        return Err(Error::corrupt(path, "has a header but no rows"));
    }
    Ok(rows)
}

/// Kinetics clips under `root` for the CSV rows; downloaded clips are already trimmed to
/// `[time_start, time_end)`, so each is decoded whole. Labels index `classes`.
pub fn kinetics(root: &Path, rows: &[KineticsRow], classes: Vec<String>) -> Result<Listing> {
    let mut listing = Listing { classes, ..Listing::default() };
    for row in rows {
        let label = listing.classes.iter().position(|c| *c == row.label).ok_or_else(|| {
            Error::corrupt(root, format!("class {:?} (video {}) is not in the class list", row.label, row.youtube_id))
        })?;
        let path = root.join(row.relative_path());
        if path.is_file() {
            listing.inputs.push(Input { path, label: label as i32, kind: InputKind::Video { range: TimeRange::default() } });
        } else {
            listing.missing.push(path);
        }
    }
    Ok(listing)
}

/// A folder of videos: one subfolder per class (sorted names are the labels), or videos directly
/// inside (one unnamed class).
pub fn video_folder(root: &Path) -> Result<Listing> {
    folder(root, VIDEO_EXTENSIONS, InputKind::Video { range: TimeRange::default() })
}

/// An ImageNet-style folder: one subfolder of JPEG/PNG files per class.
pub fn image_folder(root: &Path) -> Result<Listing> {
    folder(root, IMAGE_EXTENSIONS, InputKind::Image)
}

fn folder(root: &Path, extensions: &[&str], kind: InputKind) -> Result<Listing> {
    let entries = sorted_entries(root).map_err(|e| Error::io(root, e))?;
    let has_ext = |p: &Path| p.extension().and_then(|e| e.to_str()).is_some_and(|e| extensions.contains(&e.to_ascii_lowercase().as_str()));
    // An entry whose metadata cannot be read (a dangling link, no permission) is reported.
    let mut listing = Listing::default();
    let entries = readable(entries, &mut listing);
    let class_dirs: Vec<&PathBuf> = entries.iter().filter(|p| p.is_dir()).collect();
    if class_dirs.is_empty() {
        listing.classes.push(String::new());
        listing.inputs = entries.iter().filter(|p| has_ext(p)).map(|p| Input { path: p.clone(), label: 0, kind }).collect();
    }
    for (label, dir) in class_dirs.into_iter().enumerate() {
        listing.classes.push(dir.file_name().unwrap_or_default().to_string_lossy().into_owned());
        match sorted_entries(dir) {
            Ok(files) => {
                let files = readable(files.into_iter().filter(|p| has_ext(p)).collect(), &mut listing);
                listing.inputs.extend(files.into_iter().map(|path| Input { path, label: label as i32, kind }));
            }
            Err(e) => listing.unreadable.push((dir.clone(), format!("cannot list the folder: {e}"))),
        }
    }
    if listing.inputs.is_empty() && listing.unreadable.is_empty() {
        return Err(Error::input(root, format!("no input files (looked for .{})", extensions.join(", ."))));
    }
    Ok(listing)
}

/// The entries that can be read; the others are listed as unreadable with the reason: a name
/// that is not UTF-8 (FFmpeg opens files by UTF-8 name, and the manifest records names; shown
/// with U+FFFD where bytes were not UTF-8), or metadata that cannot be read (a dangling link,
/// no permission).
fn readable(entries: Vec<PathBuf>, listing: &mut Listing) -> Vec<PathBuf> {
    entries
        .into_iter()
        .filter(|p| {
            if p.to_str().is_none() {
                listing.unreadable.push((PathBuf::from(p.to_string_lossy().into_owned()), "the name is not valid UTF-8: rename it".into()));
                return false;
            }
            match std::fs::metadata(p) {
                Ok(_) => true,
                Err(e) => {
                    listing.unreadable.push((p.clone(), format!("cannot read: {e}")));
                    false
                }
            }
        })
        .collect()
}

fn sorted_entries(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)?.map(|e| e.map(|e| e.path())).collect::<std::io::Result<_>>()?;
    v.sort();
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinetics_path_layout_is_zero_padded() {
        let row = KineticsRow { label: "abseiling".into(), youtube_id: "0wR5jVB-WPk".into(), time_start: 417, time_end: 427, split: "val".into() };
        assert_eq!(row.relative_path(), PathBuf::from("val/abseiling/0wR5jVB-WPk_000417_000427.mp4"));
    }
}
