//! Preparing real clips into shards: bad inputs are skipped and named, shards round-trip, a
//! stopped run resumes, and the Kinetics layout is found from the real CSV.

mod common;

use std::path::Path;
use std::process::Command;

use common::{run, shared};
use video_io::sampling::FrameSampling;
use video_io::datasets::{image_folder, kinetics, read_class_list, read_kinetics_csv, video_folder};
use video_io::prepare::{Manifest, PrepareConfig, ShardDataset, clips_of, prepare};

fn config() -> PrepareConfig {
    PrepareConfig { frames: 16, size: 32, sampling: FrameSampling::Stride { stride: 1 }, clips_per_video: 2, inputs_per_shard: 3 }
}

/// A folder with the real clips and, beside them, a damaged copy of each kind of bad input.
fn folder_with_bad_inputs(dir: &Path) {
    let videos = shared().join("videos");
    for f in ["demo.mp4", "part_0.mp4", "test.mp4", "test.avi"] {
        std::fs::copy(videos.join(f), dir.join(f)).unwrap();
    }
    let real = std::fs::read(videos.join("test.mp4")).unwrap();
    std::fs::write(dir.join("zero_bytes.mp4"), b"").unwrap();
    std::fs::write(dir.join("text.mp4"), b"this is a text file, not a video\n").unwrap();
    std::fs::write(dir.join("truncated.mp4"), &real[..real.len() * 6 / 10]).unwrap();
    let mut corrupt = real.clone();
    let mid = corrupt.len() / 2;
    for (i, b) in corrupt[mid..mid + 4000].iter_mut().enumerate() {
        *b = (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3];
    }
    std::fs::write(dir.join("corrupt_middle.mp4"), corrupt).unwrap();
    // Made from the real clips with the FFmpeg command line: too few frames, and audio only.
    run(Command::new("ffmpeg").args(["-v", "error", "-y", "-i"]).arg(videos.join("part_0.mp4")).args(["-frames:v", "8", "-c", "copy"]).arg(dir.join("short.mp4")));
    run(Command::new("ffmpeg").args(["-v", "error", "-y", "-i"]).arg(videos.join("test.avi")).args(["-vn", "-c:a", "copy", "-f", "mp4"]).arg(dir.join("audio_only.mp4")));
    std::os::unix::fs::symlink("/nonexistent/clips", dir.join("dangling_link")).unwrap();
}

#[test]
fn bad_inputs_are_skipped_with_reasons_and_the_rest_is_prepared() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, out) = (tmp.path().join("clips"), tmp.path().join("shards"));
    std::fs::create_dir(&src).unwrap();
    folder_with_bad_inputs(&src);
    let listing = video_folder(&src).unwrap();
    let report = prepare(&listing, &config(), &out, 2, false).unwrap();
    let manifest = Manifest::load(&out).unwrap();
    let reason = |name: &str| {
        manifest.skipped.iter().find(|s| s.path.ends_with(name)).unwrap_or_else(|| panic!("{name} not skipped: {manifest:#?}")).reason.clone()
    };
    assert!(reason("zero_bytes.mp4").contains("empty"));
    assert!(reason("text.mp4").contains("not a readable media file"));
    assert!(reason("truncated.mp4").contains("not a readable media file"));
    assert!(reason("short.mp4").contains("too short: 8 frames"));
    assert!(reason("audio_only.mp4").contains("no video stream"));
    assert!(reason("dangling_link").contains("cannot read"));
    assert_eq!(manifest.skipped.len(), 6);
    assert_eq!(report.skipped, 5); // the dangling link was reported while listing
    // The clip damaged half-way keeps its clean clips (two 16-frame windows from its first half).
    let damaged = &manifest.damaged;
    assert_eq!(damaged.len(), 1, "{damaged:#?}");
    assert!(damaged[0].path.ends_with("corrupt_middle.mp4") && damaged[0].damage.reason.contains("corrupt"), "{damaged:#?}");
    assert!(damaged[0].damage.frame >= 32 && damaged[0].clips_kept == 2, "{damaged:#?}");
    assert_eq!(report.damaged, 1);
    // Four good clips and the damaged one, two 16-frame windows each (part_0.mp4 has 32 frames).
    assert_eq!(report.records, 10);
    let data = ShardDataset::open(&out).unwrap();
    assert_eq!(data.len(), 10);
    assert!(!out.read_dir().unwrap().any(|e| e.unwrap().file_name().to_string_lossy().contains("partial")));
}

#[test]
fn damage_after_the_first_tenth_keeps_the_clean_clips_before_it() {
    // One corrupt packet's worth of flipped bytes just after the first tenth of a real clip.
    let tmp = tempfile::tempdir().unwrap();
    let real = std::fs::read(shared().join("videos/test.mp4")).unwrap();
    let mut bytes = real.clone();
    let at = real.len() / 10 + 1000;
    bytes[at..at + 2000].iter_mut().for_each(|b| *b ^= 0x5A);
    let path = tmp.path().join("damaged.mp4");
    std::fs::write(&path, bytes).unwrap();
    let input = video_io::datasets::Input { path, label: 3, kind: video_io::datasets::InputKind::Video { range: Default::default() } };
    let cfg = PrepareConfig { clips_per_video: 20, ..config() };
    let got = clips_of(&input, &cfg).unwrap();
    let damage = got.damage.expect("the damage is reported");
    assert!(damage.frame >= 16 && damage.frame < 300, "{damage:?}");
    assert_eq!(got.clips.len(), damage.frame / 16, "every whole clip before frame {} is kept", damage.frame);
    assert!(got.clips.labels.iter().all(|&l| l == 3));
}

#[test]
fn a_healthy_avi_whose_container_lists_two_frames_more_is_not_truncated() {
    // bgslibrary_video02.avi: the AVI index lists 750 frames, 748 decode without error (ffprobe
    // -count_frames agrees).
    let path = shared().join("../clips/bgslibrary_video02.avi");
    let d = video_io::decode::decode(&path, Default::default(), video_io::decode::FrameSize::Square(16)).unwrap();
    assert_eq!((d.frames.len(), d.damage), (748, None));
}

#[test]
fn shards_return_the_decoded_bytes_and_catch_a_flipped_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let listing = video_folder(&shared().join("videos")).unwrap();
    let cfg = PrepareConfig { inputs_per_shard: 2, ..config() };
    prepare(&listing, &cfg, tmp.path(), 2, false).unwrap();
    let data = ShardDataset::open(tmp.path()).unwrap();
    assert_eq!(data.layout().pixel_bytes(), 16 * 32 * 32 * 3);
    let mut i = 0;
    for input in &listing.inputs {
        let clips = clips_of(input, &cfg).unwrap().clips;
        for clip_index in 0..clips.len() {
            let (record, source) = data.get(i);
            let expected: Vec<u8> = clips.clip(clip_index).iter().copied().collect();
            assert_eq!((record.pixels, record.label), (&expected[..], input.label));
            assert_eq!((&source.path, source.clip), (&input.path, clip_index));
            i += 1;
        }
    }
    assert_eq!(i, data.len());
    drop(data);
    let shard = tmp.path().join("shard-00001.bin");
    let mut bytes = std::fs::read(&shard).unwrap();
    bytes[5000] ^= 0x10;
    std::fs::write(&shard, bytes).unwrap();
    let err = ShardDataset::open(tmp.path()).err().unwrap().to_string();
    assert!(err.contains("shard-00001.bin") && err.contains("checksum"), "{err}");
}

#[test]
fn a_stopped_run_resumes_where_it_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let listing = video_folder(&shared().join("videos")).unwrap();
    let cfg = PrepareConfig { inputs_per_shard: 1, clips_per_video: 1, ..config() };
    let first = prepare(&listing, &cfg, tmp.path(), 2, false).unwrap();
    assert_eq!((first.chunks_done, first.chunks_resumed), (4, 0));
    let before: Vec<Vec<u8>> = (0..4).map(|c| std::fs::read(tmp.path().join(format!("shard-{c:05}.bin"))).unwrap()).collect();
    // As if stopped before chunks 2 and 3 were written, one leaving a damaged file behind.
    std::fs::remove_file(tmp.path().join("shard-00002.bin")).unwrap();
    std::fs::write(tmp.path().join("shard-00003.bin"), b"half a shard").unwrap();
    let again = prepare(&listing, &cfg, tmp.path(), 2, false).unwrap();
    assert_eq!((again.chunks_done, again.chunks_resumed), (2, 2));
    for (c, bytes) in before.iter().enumerate() {
        assert_eq!(&std::fs::read(tmp.path().join(format!("shard-{c:05}.bin"))).unwrap(), bytes);
    }
    assert_eq!(ShardDataset::open(tmp.path()).unwrap().len(), 4);
    // Other settings in the same folder are refused, and nothing is overwritten.
    let err = prepare(&listing, &PrepareConfig { size: 64, ..cfg }, tmp.path(), 2, false).unwrap_err().to_string();
    assert!(err.contains("manifest.json") && err.contains("other settings"), "{err}");
    assert_eq!(std::fs::read(tmp.path().join("shard-00000.bin")).unwrap(), before[0]);
}

#[test]
fn kinetics_layout_from_the_real_csv() {
    let rows = read_kinetics_csv(&shared().join("../kinetics600_csv/kinetics-600_val.head101.csv")).unwrap();
    assert_eq!(rows.len(), 100);
    let classes = read_class_list(&shared().join("labels/label_map_k600.txt")).unwrap();
    assert_eq!(classes.len(), 600);
    // "Download" two of the rows: real clips placed where the downloader would have put them.
    let root = tempfile::tempdir().unwrap();
    for (row, clip) in rows[98..].iter().zip(["part_0.mp4", "test.mp4"]) {
        let path = root.path().join(row.relative_path());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::copy(shared().join("videos").join(clip), path).unwrap();
    }
    let listing = kinetics(root.path(), &rows, classes.clone()).unwrap();
    assert_eq!((listing.inputs.len(), listing.missing.len()), (2, 98));
    let label = &rows[98].label;
    assert_eq!(listing.inputs[0].label as usize, classes.iter().position(|c| c == label).unwrap());
    let out = root.path().join("shards");
    let report = prepare(&listing, &PrepareConfig { clips_per_video: 1, ..config() }, &out, 2, false).unwrap();
    assert_eq!((report.records, report.missing), (2, 98));
    assert_eq!(Manifest::load(&out).unwrap().missing.len(), 98);
    // An unknown class is an error that names it.
    let mut bad = rows[..1].to_vec();
    bad[0].label = "juggling chainsaws".into();
    let err = kinetics(root.path(), &bad, classes).unwrap_err().to_string();
    assert!(err.contains("juggling chainsaws"), "{err}");
}

#[test]
fn real_frames_as_a_two_class_image_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let frames = shared().join("frames");
    for (class, range) in [("early", 1..=5), ("late", 6..=10)] {
        std::fs::create_dir(tmp.path().join(class)).unwrap();
        for i in range {
            let name = format!("img_{i:05}.jpg");
            std::fs::copy(frames.join(&name), tmp.path().join(class).join(name)).unwrap();
        }
    }
    let listing = image_folder(tmp.path()).unwrap();
    assert_eq!(listing.classes, vec!["early", "late"]);
    let out = tmp.path().join("shards");
    let cfg = PrepareConfig { frames: 1, size: 32, sampling: FrameSampling::default(), clips_per_video: 1, inputs_per_shard: 4 };
    assert_eq!(prepare(&listing, &cfg, &out, 2, false).unwrap().records, 10);
    let data = ShardDataset::open(&out).unwrap();
    assert_eq!((data.get(0).0.label, data.get(9).0.label), (0, 1));
    // Images need one-frame clips.
    let err = prepare(&listing, &PrepareConfig { frames: 2, ..cfg }, &tmp.path().join("x"), 1, false).unwrap_err().to_string();
    assert!(err.contains("data.frames"), "{err}");
}
