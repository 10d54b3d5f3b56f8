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

/// The frames of a file's best video stream and what the stream says of itself.
#[derive(Clone, Debug)]
pub struct Decoded {
    pub frames: Vec<Frame>,
    pub width: usize,
    pub height: usize,
    /// Average frame rate of the stream.
    pub fps: f64,
}

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

/// Decodes the frames of the best video stream of `path` that fall in `range`. Audio and other
/// streams are ignored. Any decoding error (corrupt packet, truncated stream) fails the whole file:
/// a clip with a damaged frame is not training data.
#[cfg(not(feature = "ffmpeg"))]
pub fn decode(path: &Path, _range: TimeRange, _size: FrameSize) -> Result<Decoded> {
    Err(Error::input(path, crate::NO_FFMPEG))
}

/// Decodes the frames of the best video stream of `path` that fall in `range`. Audio and other
/// streams are ignored. Any decoding error (corrupt packet, truncated stream) fails the whole file:
/// a clip with a damaged frame is not training data.
#[cfg(feature = "ffmpeg")]
pub fn decode(path: &Path, range: TimeRange, size: FrameSize) -> Result<Decoded> {
    init();
    let err = |reason: String| Error::input(path, reason);
    let meta = std::fs::metadata(path).map_err(|e| err(format!("cannot read: {e}")))?;
    if meta.len() == 0 {
        return Err(err("empty file (0 bytes)".into()));
    }
    let mut input = ffmpeg::format::input(path).map_err(|e| err(format!("not a readable media file: {e}")))?;
    let stream = input
        .streams()
        .best(ffmpeg::media::Type::Video)
        .ok_or_else(|| err("no video stream".into()))?;
    let index = stream.index();
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

    // Built once per video: the resampling taps depend only on the sizes.
    let resizer = match size {
        FrameSize::Native => None,
        FrameSize::Square(side) => {
            let (x0, y0, s) = centre_square(width, height);
            Some(AreaResize::new((x0, y0, s, s), side, side))
        }
    };
    let mut frames = Vec::new();
    let mut decoded = VideoFrame::empty();
    let mut rgb = VideoFrame::empty();
    let mut drain = |decoder: &mut ffmpeg::decoder::Video, frames: &mut Vec<Frame>| -> Result<bool> {
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
                    scaler.run(&decoded, &mut rgb).map_err(|e| err(format!("pixel conversion failed: {e}")))?;
                    let (data, stride) = (rgb.data(0), rgb.stride(0));
                    let pixels = match &resizer {
                        Some(r) => r.apply(data, stride),
                        None => (0..height).flat_map(|y| &data[y * stride..][..width * 3]).copied().collect(),
                    };
                    frames.push(Frame { time, rgb: pixels });
                }
                Err(ffmpeg::Error::Eof) => return Ok(true),
                Err(ffmpeg::Error::Other { errno }) if errno == ffmpeg::util::error::EAGAIN => return Ok(false),
                Err(e) => return Err(err(format!("corrupt video data at frame {}: {e}", frames.len()))),
            }
        }
    };
    let mut done = false;
    for (stream, packet) in input.packets() {
        if stream.index() != index {
            continue;
        }
        decoder.send_packet(&packet).map_err(|e| err(format!("corrupt video packet after frame {}: {e}", frames.len())))?;
        if drain(&mut decoder, &mut frames)? {
            done = true;
            break;
        }
    }
    if !done {
        decoder.send_eof().map_err(|e| err(format!("decoder failed at end of stream: {e}")))?;
        drain(&mut decoder, &mut frames)?;
    }
    if frames.is_empty() {
        return Err(err("no decodable video frames".into()));
    }
    if range == TimeRange::default() && frames.len() < declared {
        return Err(err(format!("truncated: the container lists {declared} frames, only {} decode", frames.len())));
    }
    let (width, height) = match size {
        FrameSize::Native => (width, height),
        FrameSize::Square(s) => (s, s),
    };
    Ok(Decoded { frames, width, height, fps })
}
