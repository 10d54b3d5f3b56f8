//! Decoding video files with FFmpeg (ffmpeg-next) into small square RGB frames.

use std::path::Path;
#[cfg(feature = "ffmpeg")]
use std::sync::Once;

#[cfg(feature = "ffmpeg")]
use ffmpeg::{
    format::Pixel,
    software::scaling::{Context as Scaler, Flags},
    util::frame::video::Video as VideoFrame,
};
#[cfg(feature = "ffmpeg")]
use ffmpeg_next as ffmpeg;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
#[cfg(feature = "ffmpeg")]
use crate::resize::{AreaResize, centre_square};
#[cfg(feature = "ffmpeg")]
use crate::rotation::Turn;

/// Initialises FFmpeg once per process and silences its own logging: problems reach the user
/// through our errors, which name the file.
#[cfg(feature = "ffmpeg")]
pub fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        ffmpeg::init().expect("FFmpeg failed to initialise");
        ffmpeg::util::log::set_level(ffmpeg::util::log::Level::Quiet);
    });
}

/// How decoded frames are sized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameSize {
    /// The stream's own width and height.
    Native,
    /// Centre-cropped to a square and area-resized to `side × side`.
    Square(usize),
}

/// One decoded frame, packed RGB (`height × width × 3` bytes).
#[derive(Clone, Debug)]
pub struct Frame {
    /// Presentation time in seconds from the start of the stream.
    pub time: f64,
    pub rgb: Vec<u8>,
}

/// The frames of a file's best video stream, turned as a player shows them (its display matrix),
/// and what the stream says of itself.
#[derive(Clone, Debug)]
pub struct Decoded {
    /// Every frame that decoded cleanly, up to any damage.
    pub frames: Vec<Frame>,
    pub width: usize,
    pub height: usize,
    /// Average frame rate of the stream.
    pub fps: f64,
    /// Where decoding stopped early, if it did: the frames before it are intact.
    pub damage: Option<Damage>,
}

/// Damaged or missing data part-way through a stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Damage {
    /// Index of the first frame that could not be decoded (= frames kept).
    pub frame: usize,
    pub reason: String,
}

/// A stream that decodes without error but stops short of the frame count its container lists is
/// truncated only when at least this fraction is missing: real containers often list a few frames
/// more than they hold (`bgslibrary_video02.avi` lists 750 and holds 748).
#[cfg(feature = "ffmpeg")]
const TRUNCATED_FRACTION: f64 = 0.1;

/// Time range `[start, end)` in seconds; `None` on either side is open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TimeRange {
    pub start: Option<f64>,
    pub end: Option<f64>,
}

#[cfg_attr(not(feature = "ffmpeg"), allow(dead_code))]
impl TimeRange {
    /// Tolerance for timestamps rounded through the stream's time base.
    const EPS: f64 = 1e-6;

    fn before_start(&self, t: f64) -> bool {
        self.start.is_some_and(|s| t < s - Self::EPS)
    }

    fn past_end(&self, t: f64) -> bool {
        self.end.is_some_and(|e| t >= e - Self::EPS)
    }
}

/// Decodes the frames of the best video stream of `path` that fall in `range`; audio and other
/// streams are ignored. The first decoding error (a corrupt packet, a stream cut short) ends the
/// decode: the frames before it are returned with the [`Damage`], since a clip that contains a
/// damaged frame is not training data but the clean ones before it are. A file with no clean
/// frame at all is an error.
#[cfg(not(feature = "ffmpeg"))]
pub fn decode(path: &Path, _range: TimeRange, _size: FrameSize) -> Result<Decoded> {
    Err(Error::input(path, crate::NO_FFMPEG))
}

/// Decodes the frames of the best video stream of `path` that fall in `range`; audio and other
/// streams are ignored. The first decoding error (a corrupt packet, a stream cut short) ends the
/// decode: the frames before it are returned with the [`Damage`], since a clip that contains a
/// damaged frame is not training data but the clean ones before it are. A file with no clean
/// frame at all is an error.
#[cfg(feature = "ffmpeg")]
pub fn decode(path: &Path, range: TimeRange, size: FrameSize) -> Result<Decoded> {
    init();
    let err = |reason: String| Error::input(path, reason);
    if path.to_str().is_none() {
        return Err(err("the file name is not valid UTF-8 (FFmpeg opens files by UTF-8 name): rename it".into()));
    }
    let meta = std::fs::metadata(path).map_err(|e| err(format!("cannot read: {e}")))?;
    if meta.is_dir() {
        return Err(err("is a folder, expected a video file".into()));
    }
    if meta.len() == 0 {
        return Err(err("empty file (0 bytes)".into()));
    }
    let mut input = ffmpeg::format::input(path).map_err(|e| err(format!("not a readable media file: {e}")))?;
    let stream = input
        .streams()
        .best(ffmpeg::media::Type::Video)
        .ok_or_else(|| err("no video stream".into()))?;
    let index = stream.index();
    let turn = display_turn(&stream);
    let time_base = f64::from(stream.time_base());
    let start_time = if stream.start_time() == ffmpeg::ffi::AV_NOPTS_VALUE { 0 } else { stream.start_time() };
    let fps = f64::from(stream.avg_frame_rate());
    let declared = stream.frames().max(0) as usize;
    let mut codec = ffmpeg::codec::context::Context::from_parameters(stream.parameters())
        .map_err(|e| err(format!("unsupported video codec parameters: {e}")))?;
    // One decoding thread: `prepare` runs one decoder per core.
    codec.set_threading(ffmpeg::codec::threading::Config::count(1));
    // Report damaged data as errors instead of concealing it.
    let mut options = ffmpeg::Dictionary::new();
    options.set("err_detect", "explode");
    let id = codec.id();
    let decoder_codec = ffmpeg::decoder::find(id).ok_or_else(|| err(format!("no decoder for codec {id:?} in this FFmpeg")))?;
    let mut decoder = codec
        .decoder()
        .open_as_with(decoder_codec, options)
        .and_then(|d| d.video())
        .map_err(|e| err(format!("cannot open the video decoder: {e}")))?;
    let (width, height) = (decoder.width() as usize, decoder.height() as usize);
    if width == 0 || height == 0 {
        return Err(err(format!("video stream has no picture size ({width}x{height})")));
    }
    if let Some(start) = range.start.filter(|&s| s > 0.0) {
        let target = (start * f64::from(ffmpeg::ffi::AV_TIME_BASE)) as i64;
        input.seek(target, ..target).map_err(|e| err(format!("cannot seek to {start} s: {e}")))?;
    }
    let mut scaler = Scaler::get(decoder.format(), decoder.width(), decoder.height(), Pixel::RGB24, decoder.width(), decoder.height(), Flags::BILINEAR)
        .map_err(|e| err(format!("cannot convert pixel format {:?} to RGB: {e}", decoder.format())))?;

    // Frames are turned as displayed, then cropped and resized.
    let (shown_w, shown_h) = turn.size(width, height);
    // Built once per video: the resampling taps depend only on the sizes.
    let resizer = match size {
        FrameSize::Native => None,
        FrameSize::Square(side) => {
            let (x0, y0, s) = centre_square(shown_w, shown_h);
            Some(AreaResize::new((x0, y0, s, s), side, side))
        }
    };
    let mut frames = Vec::new();
    let mut decoded = VideoFrame::empty();
    let mut rgb = VideoFrame::empty();
    // Ok(true) once the range is done, Ok(false) when the decoder wants more data.
    let mut drain = |decoder: &mut ffmpeg::decoder::Video, frames: &mut Vec<Frame>| -> std::result::Result<bool, String> {
        loop {
            match decoder.receive_frame(&mut decoded) {
                Ok(()) => {
                    let pts = decoded.timestamp().or(decoded.pts()).unwrap_or(0);
                    let time = (pts - start_time) as f64 * time_base;
                    if range.past_end(time) {
                        return Ok(true);
                    }
                    if range.before_start(time) {
                        continue;
                    }
                    scaler.run(&decoded, &mut rgb).map_err(|e| format!("pixel conversion failed: {e}"))?;
                    let (data, stride) = (rgb.data(0), rgb.stride(0));
                    let turned;
                    let (data, stride) = match turn {
                        Turn::None => (data, stride),
                        _ => {
                            turned = turn.apply(data, stride, width, height);
                            (turned.as_slice(), shown_w * 3)
                        }
                    };
                    let pixels = match &resizer {
                        Some(r) => r.apply(data, stride),
                        None => (0..shown_h).flat_map(|y| &data[y * stride..][..shown_w * 3]).copied().collect(),
                    };
                    frames.push(Frame { time, rgb: pixels });
                }
                Err(ffmpeg::Error::Eof) => return Ok(true),
                Err(ffmpeg::Error::Other { errno }) if errno == ffmpeg::util::error::EAGAIN => return Ok(false),
                Err(e) => return Err(format!("corrupt video data: {e}")),
            }
        }
    };
    let mut damage = None;
    let mut done = false;
    for (stream, packet) in input.packets() {
        if stream.index() != index {
            continue;
        }
        let sent = decoder.send_packet(&packet).map_err(|e| format!("corrupt video packet: {e}"));
        match sent.and_then(|()| drain(&mut decoder, &mut frames)) {
            Ok(true) => {
                done = true;
                break;
            }
            Ok(false) => {}
            Err(reason) => {
                damage = Some(Damage { frame: frames.len(), reason });
                break;
            }
        }
    }
    if !done && damage.is_none() {
        let flushed = decoder.send_eof().map_err(|e| format!("decoder failed at end of stream: {e}"));
        if let Err(reason) = flushed.and_then(|()| drain(&mut decoder, &mut frames)) {
            damage = Some(Damage { frame: frames.len(), reason });
        }
    }
    if frames.is_empty() {
        let why = damage.map_or_else(|| "no decodable video frames".to_owned(), |d| format!("no clean frame before the damage ({})", d.reason));
        return Err(err(why));
    }
    let missing = declared.saturating_sub(frames.len());
    if damage.is_none() && range == TimeRange::default() && missing as f64 > TRUNCATED_FRACTION * declared as f64 {
        let reason = format!("truncated: the stream ends after {} of the {declared} frames its container lists", frames.len());
        damage = Some(Damage { frame: frames.len(), reason });
    }
    let (width, height) = match size {
        FrameSize::Native => (shown_w, shown_h),
        FrameSize::Square(s) => (s, s),
    };
    Ok(Decoded { frames, width, height, fps, damage })
}

/// The turn the stream's display matrix asks for, if it has one.
#[cfg(feature = "ffmpeg")]
fn display_turn(stream: &ffmpeg::format::stream::Stream<'_>) -> Turn {
    use ffmpeg::codec::packet::side_data::Type;
    stream
        .side_data()
        .find(|d| d.kind() == Type::DisplayMatrix && d.data().len() >= 36)
        .map_or(Turn::None, |d| {
            let m: [i32; 9] = std::array::from_fn(|i| i32::from_ne_bytes(d.data()[4 * i..4 * i + 4].try_into().expect("4 bytes")));
            Turn::from_display_matrix(&m)
        })
}
