//! Writing clips as H.264 MP4 and images as PNG grids, atomically.

use std::path::Path;

#[cfg(feature = "ffmpeg")]
use ffmpeg::{
    format::Pixel,
    software::scaling::{Context as Scaler, Flags},
    util::frame::video::Video as VideoFrame,
};
#[cfg(feature = "ffmpeg")]
use ffmpeg_next as ffmpeg;

#[cfg(feature = "ffmpeg")]
use crate::decode::init;
use crate::error::{Error, Result};

/// A clip of packed RGB frames, each `height × width × 3` bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Clip {
    pub width: usize,
    pub height: usize,
    pub frames: Vec<Vec<u8>>,
}

impl Clip {
    /// Nearest-neighbour integer upscale, so 64×64 clips are viewable.
    pub fn upscale(&self, factor: usize) -> Clip {
        let (w, h) = (self.width * factor, self.height * factor);
        let frames = self
            .frames
            .iter()
            .map(|f| {
                let mut out = Vec::with_capacity(w * h * 3);
                for y in 0..h {
                    for x in 0..w {
                        let p = ((y / factor) * self.width + x / factor) * 3;
                        out.extend_from_slice(&f[p..p + 3]);
                    }
                }
                out
            })
            .collect();
        Clip { width: w, height: h, frames }
    }

    /// Clips of equal size and length side by side, separated by `gap` black pixels.
    pub fn side_by_side(clips: &[Clip], gap: usize) -> Clip {
        let (w, h, t) = (clips[0].width, clips[0].height, clips[0].frames.len());
        assert!(clips.iter().all(|c| c.width == w && c.height == h && c.frames.len() == t), "clips must match in size and length");
        let total = clips.len() * w + (clips.len() - 1) * gap;
        let frames = (0..t)
            .map(|f| {
                let mut out = vec![0u8; total * h * 3];
                for (i, clip) in clips.iter().enumerate() {
                    let x0 = i * (w + gap);
                    for y in 0..h {
                        out[(y * total + x0) * 3..][..w * 3].copy_from_slice(&clip.frames[f][y * w * 3..][..w * 3]);
                    }
                }
                out
            })
            .collect();
        Clip { width: total, height: h, frames }
    }

    /// Draws a `border`-pixel frame of `rgb` around the first `count` frames (marks context).
    pub fn mark_frames(&mut self, count: usize, border: usize, rgb: [u8; 3]) {
        let (w, h) = (self.width, self.height);
        for frame in self.frames.iter_mut().take(count) {
            for y in 0..h {
                for x in 0..w {
                    if x < border || y < border || x >= w - border || y >= h - border {
                        frame[(y * w + x) * 3..][..3].copy_from_slice(&rgb);
                    }
                }
            }
        }
    }
}

/// Writes `clip` as H.264 (libx264, yuv420p, CRF 18) in an MP4 with the index at the front
/// (faststart), `fps` frames per second. The file appears complete or not at all.
#[cfg(not(feature = "ffmpeg"))]
pub fn write_mp4(path: &Path, _clip: &Clip, _fps: u32) -> Result<()> {
    Err(Error::io(path, std::io::Error::other(crate::NO_FFMPEG)))
}

/// Writes `clip` as H.264 (libx264, yuv420p, CRF 18) in an MP4 with the index at the front
/// (faststart), `fps` frames per second. The file appears complete or not at all.
#[cfg(feature = "ffmpeg")]
pub fn write_mp4(path: &Path, clip: &Clip, fps: u32) -> Result<()> {
    init();
    let err = |what: &str, e: ffmpeg::Error| Error::io(path, std::io::Error::other(format!("{what}: {e}")));
    if clip.frames.is_empty() || clip.width % 2 != 0 || clip.height % 2 != 0 {
        return Err(Error::io(path, std::io::Error::other(format!("need at least one frame of even size, got {} frames of {}x{}", clip.frames.len(), clip.width, clip.height))));
    }
    crate::atomic::write_with(path, |tmp| {
        let mut output = ffmpeg::format::output(&tmp).map_err(|e| err("cannot create MP4", e))?;
        let codec = ffmpeg::encoder::find_by_name("libx264")
            .ok_or_else(|| Error::io(path, std::io::Error::other("this FFmpeg has no libx264 encoder")))?;
        let global_header = output.format().flags().contains(ffmpeg::format::Flags::GLOBAL_HEADER);
        let mut stream = output.add_stream(codec).map_err(|e| err("cannot add a video stream", e))?;
        let mut ctx = ffmpeg::codec::context::Context::new_with_codec(codec).encoder().video().map_err(|e| err("no video encoder", e))?;
        let time_base = ffmpeg::Rational::new(1, fps as i32);
        ctx.set_width(clip.width as u32);
        ctx.set_height(clip.height as u32);
        ctx.set_format(Pixel::YUV420P);
        ctx.set_time_base(time_base);
        ctx.set_frame_rate(Some(ffmpeg::Rational::new(fps as i32, 1)));
        if global_header {
            ctx.set_flags(ffmpeg::codec::Flags::GLOBAL_HEADER);
        }
        let mut options = ffmpeg::Dictionary::new();
        options.set("crf", "18");
        options.set("preset", "medium");
        let mut encoder = ctx.open_with(options).map_err(|e| err("cannot open libx264", e))?;
        stream.set_parameters(&encoder);
        stream.set_time_base(time_base);
        let mut muxer_options = ffmpeg::Dictionary::new();
        muxer_options.set("movflags", "+faststart");
        output.write_header_with(muxer_options).map_err(|e| err("cannot write the MP4 header", e))?;
        let stream_time_base = output.stream(0).map(|s| s.time_base()).unwrap_or(time_base);

        let mut scaler = Scaler::get(Pixel::RGB24, clip.width as u32, clip.height as u32, Pixel::YUV420P, clip.width as u32, clip.height as u32, Flags::BICUBIC)
            .map_err(|e| err("cannot convert RGB to yuv420p", e))?;
        let write_packets = |encoder: &mut ffmpeg::encoder::Video, output: &mut ffmpeg::format::context::Output| -> Result<()> {
            let mut packet = ffmpeg::Packet::empty();
            while encoder.receive_packet(&mut packet).is_ok() {
                packet.set_stream(0);
                // FFmpeg 5.1's libx264 wrapper leaves durations at 0 and the MP4 muxer then drops the
                // last frame (stack.md): every packet lasts one frame.
                packet.set_duration(1);
                packet.rescale_ts(time_base, stream_time_base);
                packet.write_interleaved(output).map_err(|e| err("cannot write a packet", e))?;
            }
            Ok(())
        };
        let mut rgb = VideoFrame::new(Pixel::RGB24, clip.width as u32, clip.height as u32);
        let mut yuv = VideoFrame::empty();
        for (i, frame) in clip.frames.iter().enumerate() {
            let stride = rgb.stride(0);
            for y in 0..clip.height {
                rgb.data_mut(0)[y * stride..][..clip.width * 3].copy_from_slice(&frame[y * clip.width * 3..][..clip.width * 3]);
            }
            scaler.run(&rgb, &mut yuv).map_err(|e| err("pixel conversion failed", e))?;
            yuv.set_pts(Some(i as i64));
            encoder.send_frame(&yuv).map_err(|e| err("encoding failed", e))?;
            write_packets(&mut encoder, &mut output)?;
        }
        encoder.send_eof().map_err(|e| err("encoder flush failed", e))?;
        write_packets(&mut encoder, &mut output)?;
        output.write_trailer().map_err(|e| err("cannot finish the MP4", e))?;
        Ok(())
    })
}

/// Images (`side × side` RGB each) tiled into a grid of `columns`, written as PNG atomically.
pub fn write_png_grid(path: &Path, images: &[Vec<u8>], side: usize, columns: usize) -> Result<()> {
    let columns = columns.clamp(1, images.len().max(1));
    let rows = images.len().div_ceil(columns);
    let (w, h) = (columns * side, rows * side);
    let mut canvas = vec![0u8; w * h * 3];
    for (i, img) in images.iter().enumerate() {
        let (cx, cy) = ((i % columns) * side, (i / columns) * side);
        for y in 0..side {
            canvas[((cy + y) * w + cx) * 3..][..side * 3].copy_from_slice(&img[y * side * 3..][..side * 3]);
        }
    }
    crate::atomic::write_with(path, |tmp| {
        image::save_buffer_with_format(tmp, &canvas, w as u32, h as u32, image::ColorType::Rgb8, image::ImageFormat::Png)
            .map_err(|e| Error::io(path, std::io::Error::other(e)))
    })
}
