//! Shard files: fixed-size records of clip pixels, checksummed, read through memory mapping.
//!
//! Format version 1, little-endian:
//!
//! | bytes  | field                                                        |
//! |--------|--------------------------------------------------------------|
//! | 0..8   | magic `SID2SHRD`                                             |
//! | 8..12  | format version (1)                                           |
//! | 12..28 | frames, height, width, channels (u32 each)                   |
//! | 28..32 | reserved, zero                                               |
//! | 32..40 | record count (u64)                                           |
//! | 40..44 | CRC-32 of all record bytes                                   |
//! | 44..48 | CRC-32 of bytes 0..44                                        |
//! | 48..64 | reserved, zero                                               |
//! | 64..   | records: label (i32), source (u32), pixels `[T, H, W, C]` u8 |
//!
//! `source` indexes the shard's source list in the manifest.

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub const MAGIC: [u8; 8] = *b"SID2SHRD";
pub const VERSION: u32 = 1;
pub const HEADER_BYTES: usize = 64;
const RECORD_PREFIX: usize = 8;

/// The shape of every record in a shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordLayout {
    pub frames: u32,
    pub height: u32,
    pub width: u32,
    pub channels: u32,
}

impl RecordLayout {
    /// `[T, H, W, C]`.
    pub fn dims(&self) -> [usize; 4] {
        [self.frames, self.height, self.width, self.channels].map(|v| v as usize)
    }

    pub fn pixel_bytes(&self) -> usize {
        self.frames as usize * self.height as usize * self.width as usize * self.channels as usize
    }
    pub fn record_bytes(&self) -> usize {
        RECORD_PREFIX + self.pixel_bytes()
    }
}

impl std::fmt::Display for RecordLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} frames of {}x{}x{}", self.frames, self.height, self.width, self.channels)
    }
}

/// One record as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub label: i32,
    pub source: u32,
    /// `[T, H, W, C]` bytes.
    pub pixels: &'a [u8],
}

/// Writes a shard atomically and returns its body checksum.
pub fn write_shard<'a>(path: &Path, layout: RecordLayout, records: impl IntoIterator<Item = Record<'a>>) -> Result<u32> {
    let mut body = Vec::new();
    let mut count = 0u64;
    for r in records {
        assert_eq!(r.pixels.len(), layout.pixel_bytes(), "record does not match the shard layout");
        body.extend_from_slice(&r.label.to_le_bytes());
        body.extend_from_slice(&r.source.to_le_bytes());
        body.extend_from_slice(r.pixels);
        count += 1;
    }
    let crc = crc32fast::hash(&body);
    let mut header = [0u8; HEADER_BYTES];
    header[0..8].copy_from_slice(&MAGIC);
    header[8..12].copy_from_slice(&VERSION.to_le_bytes());
    for (i, v) in [layout.frames, layout.height, layout.width, layout.channels].into_iter().enumerate() {
        header[12 + 4 * i..16 + 4 * i].copy_from_slice(&v.to_le_bytes());
    }
    header[32..40].copy_from_slice(&count.to_le_bytes());
    header[40..44].copy_from_slice(&crc.to_le_bytes());
    let header_crc = crc32fast::hash(&header[..44]);
    header[44..48].copy_from_slice(&header_crc.to_le_bytes());
    crate::atomic::write_bytes(path, &[&header, &body])?;
    Ok(crc)
}

/// An open, verified shard.
pub struct Shard {
    map: Mmap,
    /// Where it was opened from, for messages.
    pub path: PathBuf,
    pub layout: RecordLayout,
    pub len: usize,
    pub crc: u32,
}

impl Shard {
    /// Maps `path` and checks magic, version, header checksum, size and body checksum.
    pub fn open(path: &Path) -> Result<Self> {
        let bad = |reason: String| Error::corrupt(path, reason);
        if path.is_dir() {
            return Err(bad("is a folder, expected a shard file".into()));
        }
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: shards are written once through a rename and never modified in place.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        if map.len() < HEADER_BYTES || map[0..8] != MAGIC {
            return Err(bad("not a shard file (bad magic)".into()));
        }
        let u32_at = |o: usize| u32::from_le_bytes(map[o..o + 4].try_into().unwrap());
        if u32_at(8) != VERSION {
            return Err(bad(format!("shard format version {} (this build reads {VERSION})", u32_at(8))));
        }
        if crc32fast::hash(&map[..44]) != u32_at(44) {
            return Err(bad("header checksum mismatch".into()));
        }
        let layout = RecordLayout { frames: u32_at(12), height: u32_at(16), width: u32_at(20), channels: u32_at(24) };
        let len = u64::from_le_bytes(map[32..40].try_into().unwrap()) as usize;
        // The header is checksummed, but a crafted one must not overflow the size.
        let dims = [layout.frames, layout.height, layout.width, layout.channels].map(|d| d as usize);
        let expected = dims.iter().try_fold(len, |n, &d| n.checked_mul(d)).and_then(|pixels| pixels.checked_add(len.checked_mul(RECORD_PREFIX)?)).and_then(|b| b.checked_add(HEADER_BYTES));
        let Some(expected) = expected.filter(|_| dims.iter().all(|&d| d > 0)) else {
            return Err(bad("header gives an impossible record size".into()));
        };
        if map.len() != expected {
            return Err(bad(format!("size {} bytes, header says {expected} (truncated or extended)", map.len())));
        }
        let crc = u32_at(40);
        if crc32fast::hash(&map[HEADER_BYTES..]) != crc {
            return Err(bad("record checksum mismatch (data damaged)".into()));
        }
        Ok(Self { map, path: path.to_path_buf(), layout, len, crc })
    }

    pub fn get(&self, i: usize) -> Record<'_> {
        assert!(i < self.len, "record {i} of {}", self.len);
        let start = HEADER_BYTES + i * self.layout.record_bytes();
        let rec = &self.map[start..start + self.layout.record_bytes()];
        Record {
            label: i32::from_le_bytes(rec[0..4].try_into().unwrap()),
            source: u32::from_le_bytes(rec[4..8].try_into().unwrap()),
            pixels: &rec[RECORD_PREFIX..],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage_detection() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.bin");
        let layout = RecordLayout { frames: 2, height: 3, width: 3, channels: 3 };
        let pixels: Vec<Vec<u8>> = (0..4).map(|i| (0..54).map(|j| (i * 54 + j) as u8).collect()).collect();
        let records = pixels.iter().enumerate().map(|(i, p)| Record { label: i as i32 - 1, source: i as u32, pixels: p });
        write_shard(&path, layout, records).unwrap();
        let shard = Shard::open(&path).unwrap();
        assert_eq!((shard.len, shard.layout), (4, layout));
        for i in 0..4 {
            let r = shard.get(i);
            assert_eq!((r.label, r.source, r.pixels), (i as i32 - 1, i as u32, &pixels[i][..]));
        }
        drop(shard);
        // Flip one byte in the body, then in the header: both are caught and named.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEADER_BYTES + 100] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let err = Shard::open(&path).err().unwrap().to_string();
        assert!(err.contains("s.bin") && err.contains("checksum"), "{err}");
        bytes[HEADER_BYTES + 100] ^= 0x01;
        bytes[33] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        assert!(Shard::open(&path).err().unwrap().to_string().contains("header checksum"));
        bytes[33] ^= 0x01;
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        assert!(Shard::open(&path).err().unwrap().to_string().contains("truncated"));
        assert!(!crate::atomic::partial_path(&path).exists());
    }
}
