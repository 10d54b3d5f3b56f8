//! Decoding and encoding against the FFmpeg command-line tools on the real clips.

mod common;

use std::process::Command;

use common::{ffprobe, psnr, real_clips, run};
use video_io::decode::{FrameSize, TimeRange, decode};
use ndarray::{Array4, Axis};
use video_io::encode::{upscale, write_mp4};

#[test]
fn frame_counts_and_sizes_agree_with_ffprobe() {
    for path in real_clips() {
        let (frames, width, height) = ffprobe(&path);
        let d = decode(&path, TimeRange::default(), FrameSize::Native).unwrap();
        assert_eq!((d.frames.len(), d.width, d.height), (frames, width, height), "{}", path.display());
        assert_eq!(d.frames[0].rgb.len(), width * height * 3);
        // Timestamps increase at the stream's frame rate.
        let dt = d.frames[1].time - d.frames[0].time;
        assert!((dt * d.fps - 1.0).abs() < 0.01, "{}: dt {dt} fps {}", path.display(), d.fps);
    }
}

#[test]
fn vp9_webm_decodes_like_ffprobe_counts() {
    // A VP9 WebM made from a real clip with the FFmpeg command line.
    let dir = tempfile::tempdir().unwrap();
    let webm = dir.path().join("part_0.webm");
    run(Command::new("ffmpeg").args(["-v", "error", "-i"]).arg(&real_clips()[1]).args([
        "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "400k",
    ]).arg(&webm));
    let (frames, width, height) = ffprobe(&webm);
    let d = decode(&webm, TimeRange::default(), FrameSize::Square(64)).unwrap();
    assert_eq!((d.frames.len(), width, height), (frames, 340, 256));
    assert_eq!(d.frames[0].rgb.len(), 64 * 64 * 3);
}

#[test]
fn native_frames_equal_ffmpeg_rgb_output_exactly_up_to_rounding() {
    // No resampling: compare with `ffmpeg -pix_fmt rgb24` with the same (bilinear) conversion.
    let path = &real_clips()[1];
    let d = decode(path, TimeRange::default(), FrameSize::Native).unwrap();
    let raw = run(Command::new("ffmpeg").args(["-v", "error", "-i"]).arg(path).args(["-frames:v", "4", "-sws_flags", "bilinear", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]));
    let ours: Vec<u8> = d.frames[..4].iter().flat_map(|f| f.rgb.clone()).collect();
    assert!(psnr(&ours, &raw) > 45.0, "PSNR {}", psnr(&ours, &raw));
}

#[test]
fn crop_and_area_resize_agree_with_the_ffmpeg_filter_chain() {
    // Same work on the command line: RGB conversion, centre square crop, area downscale, every
    // decoded frame kept (passthrough timing, so the AVI's frames are not duplicated):
    //   ffmpeg -i CLIP -fps_mode passthrough \
    //     -vf "format=rgb24,crop=min(iw\,ih):min(iw\,ih),scale=64:64:flags=area" -pix_fmt rgb24
    // measured 62-66 dB here (the last bits are rounding). 256 -> 64 and 240 -> 64 (3.75x, partial
    // pixels) are both covered.
    for path in real_clips() {
        let d = decode(&path, TimeRange::default(), FrameSize::Square(64)).unwrap();
        let raw = run(Command::new("ffmpeg").args(["-v", "error", "-i"]).arg(&path).args([
            "-fps_mode", "passthrough", "-vf", "format=rgb24,crop=min(iw\\,ih):min(iw\\,ih),scale=64:64:flags=area",
            "-frames:v", "16", "-f", "rawvideo", "-pix_fmt", "rgb24", "-",
        ]));
        let ours: Vec<u8> = d.frames[..16].iter().flat_map(|f| f.rgb.clone()).collect();
        let p = psnr(&ours, &raw);
        assert!(p > 50.0, "{}: PSNR {p:.1} dB", path.display());
    }
}

#[test]
fn time_range_selects_frames() {
    let path = &real_clips()[0]; // 28 fps, 10 s
    let d = decode(path, TimeRange { start: Some(2.0), end: Some(3.0) }, FrameSize::Square(32)).unwrap();
    assert_eq!(d.frames.len(), 28);
    assert!(d.frames.iter().all(|f| (2.0 - 1e-6..3.0).contains(&f.time)));
}

#[test]
fn written_mp4_has_exactly_the_frames_written() {
    let dir = tempfile::tempdir().unwrap();
    let d = decode(&real_clips()[1], TimeRange::default(), FrameSize::Square(64)).unwrap();
    for n in [1usize, 11, 16] {
        let bytes: Vec<u8> = d.frames[..n].iter().flat_map(|f| f.rgb.clone()).collect();
        let clip = Array4::from_shape_vec((n, 64, 64, 3), bytes).unwrap();
        let path = dir.path().join(format!("clip{n}.mp4"));
        let up = upscale(clip.view(), 2);
        write_mp4(&path, up.view(), 8).unwrap();
        assert_eq!(ffprobe(&path), (n, 128, 128));
        let info = String::from_utf8(run(Command::new("ffprobe").args(["-v", "error", "-show_entries", "stream=codec_name,pix_fmt:format=duration", "-of", "default=nw=1"]).arg(&path))).unwrap();
        assert!(info.contains("codec_name=h264") && info.contains("pix_fmt=yuv420p"), "{info}");
        let duration: f64 = info.lines().find_map(|l| l.strip_prefix("duration=")).unwrap().parse().unwrap();
        assert!((duration - n as f64 / 8.0).abs() < 1e-3, "{duration}");
        // faststart: the index (moov) comes before the media data (mdat).
        let bytes = std::fs::read(&path).unwrap();
        let find = |tag: &[u8]| bytes.windows(4).position(|w| w == tag).unwrap();
        assert!(find(b"moov") < find(b"mdat"));
        // Read back: close to what was written (lossy codec).
        let back = decode(&path, TimeRange::default(), FrameSize::Native).unwrap();
        let first: Vec<u8> = up.index_axis(Axis(0), 0).iter().copied().collect();
        assert!(psnr(&back.frames[0].rgb, &first) > 30.0);
    }
}

#[test]
fn rotated_videos_are_turned_as_the_ffmpeg_command_line_shows_them() {
    // A real clip with a display matrix (as phones write), made without re-encoding; `ffmpeg`
    // turns such frames by default (autorotate), as players do.
    let dir = tempfile::tempdir().unwrap();
    for angle in ["90", "180", "270"] {
        let rotated = dir.path().join(format!("rotated-{angle}.mp4"));
        run(Command::new("ffmpeg").args(["-v", "error", "-i"]).arg(&real_clips()[1]).args(["-t", "1", "-c", "copy", "-metadata:s:v:0", &format!("rotate={angle}")]).arg(&rotated));
        let d = decode(&rotated, TimeRange::default(), FrameSize::Native).unwrap();
        let expected = if angle == "180" { (340, 256) } else { (256, 340) };
        assert_eq!((d.width, d.height), expected, "rotate={angle}");
        let raw = run(Command::new("ffmpeg").args(["-v", "error", "-i"]).arg(&rotated).args(["-frames:v", "2", "-sws_flags", "bilinear", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]));
        let ours: Vec<u8> = d.frames[..2].iter().flat_map(|f| f.rgb.clone()).collect();
        assert!(psnr(&ours, &raw) > 40.0, "rotate={angle}: PSNR {}", psnr(&ours, &raw));
        // Square clips are cut from the turned frames.
        let square = decode(&rotated, TimeRange::default(), FrameSize::Square(32)).unwrap();
        let unturned = decode(&real_clips()[1], TimeRange::default(), FrameSize::Square(32)).unwrap();
        assert!(psnr(&square.frames[0].rgb, &unturned.frames[0].rgb) < 30.0, "rotate={angle}: the square was not turned");
    }
}
