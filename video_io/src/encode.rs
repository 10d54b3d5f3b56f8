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
use ndarray::{Array4, ArrayView3, ArrayView4, s};

use crate::error::{Error, Result};

/// Nearest-neighbour integer upscale of `[T, H, W, C]` frames, so 64×64 clips are viewable.
pub fn upscale(clip: ArrayView4<'_, u8>, factor: usize) -> Array4<u8> {
    let (t, h, w, c) = clip.dim();
    Array4::from_shape_fn((t, h * factor, w * factor, c), |(f, y, x, ch)| clip[[f, y / factor, x / factor, ch]])
}

/// Clips of equal size and length side by side, separated by `gap` black columns.
///
/// # Panics
/// When the clips differ in length or size.
pub fn side_by_side(clips: &[ArrayView4<'_, u8>], gap: usize) -> Array4<u8> {
    let (t, h, w, c) = clips[0].dim();
    assert!(clips.iter().all(|p| p.dim() == (t, h, w, c)), "clips must match in size and length");
    let mut out = Array4::zeros((t, h, clips.len() * (w + gap) - gap, c));
    for (i, clip) in clips.iter().enumerate() {
        let x0 = i * (w + gap);
        out.slice_mut(s![.., .., x0..x0 + w, ..]).assign(clip);
    }
    out
}

/// Draws a `border`-pixel frame of `rgb` around the first `count` frames (marks context).
pub fn mark_frames(clip: &mut Array4<u8>, count: usize, border: usize, rgb: [u8; 3]) {
    let (t, h, w, _) = clip.dim();
    let colour = ndarray::arr1(&rgb);
    for mut frame in clip.outer_iter_mut().take(count.min(t)) {
        for y in 0..h {
            for x in 0..w {
                if x < border || y < border || x + border >= w || y + border >= h {
                    frame.slice_mut(s![y, x, ..]).assign(&colour);
                }
            }
        }
    }
}

/// Writes `clip` as H.264 (libx264, yuv420p, CRF 18) in an MP4 with the index at the front
/// (faststart), `fps` frames per second. The file appears complete or not at all.
#[cfg(not(feature = "ffmpeg"))]
pub fn write_mp4(path: &Path, _clip: ArrayView4<'_, u8>, _fps: u32) -> Result<()> {
    Err(Error::io(path, std::io::Error::other(crate::NO_FFMPEG)))
}

/// Writes `[T, H, W, 3]` frames as H.264 (libx264, yuv420p, CRF 18) in an MP4 with the index at
/// the front (faststart), `fps` frames per second. The file appears complete or not at all.
#[cfg(feature = "ffmpeg")]
pub fn write_mp4(path: &Path, clip: ArrayView4<'_, u8>, fps: u32) -> Result<()> {
    init();
    let err = |what: &str, e: ffmpeg::Error| Error::io(path, std::io::Error::other(format!("{what}: {e}")));
    let (frames, height, width, channels) = clip.dim();
    if frames == 0 || width % 2 != 0 || height % 2 != 0 || channels != 3 || fps == 0 {
        let got = format!("{frames} frames of {width}x{height}x{channels} at {fps} fps");
        return Err(Error::io(path, std::io::Error::other(format!("need at least one RGB frame of even size and fps ≥ 1, got {got}"))));
    }
    crate::atomic::write_with(path, |tmp| {
        let mut output = ffmpeg::format::output(&tmp).map_err(|e| err("cannot create MP4", e))?;
        let codec = ffmpeg::encoder::find_by_name("libx264")
            .ok_or_else(|| Error::io(path, std::io::Error::other("this FFmpeg has no libx264 encoder")))?;
        let global_header = output.format().flags().contains(ffmpeg::format::Flags::GLOBAL_HEADER);
        let mut stream = output.add_stream(codec).map_err(|e| err("cannot add a video stream", e))?;
        let mut ctx = ffmpeg::codec::context::Context::new_with_codec(codec).encoder().video().map_err(|e| err("no video encoder", e))?;
        let time_base = ffmpeg::Rational::new(1, fps as i32);
        ctx.set_width(width as u32);
        ctx.set_height(height as u32);
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

        let (w32, h32) = (width as u32, height as u32);
        let mut scaler = Scaler::get(Pixel::RGB24, w32, h32, Pixel::YUV420P, w32, h32, Flags::BICUBIC)
            .map_err(|e| err("cannot convert RGB to yuv420p", e))?;
        let write_packets = |encoder: &mut ffmpeg::encoder::Video, output: &mut ffmpeg::format::context::Output| -> Result<()> {
            let mut packet = ffmpeg::Packet::empty();
            while encoder.receive_packet(&mut packet).is_ok() {
                packet.set_stream(0);
                // FFmpeg 5.1's libx264 wrapper leaves durations at 0 and the MP4 muxer then drops the
                // last frame: every packet lasts one frame.
                packet.set_duration(1);
                packet.rescale_ts(time_base, stream_time_base);
                packet.write_interleaved(output).map_err(|e| err("cannot write a packet", e))?;
            }
            Ok(())
        };
        let mut rgb = VideoFrame::new(Pixel::RGB24, w32, h32);
        let mut yuv = VideoFrame::empty();
        for (i, frame) in clip.outer_iter().enumerate() {
            let stride = rgb.stride(0);
            for (y, row) in frame.outer_iter().enumerate() {
                for (dst, &v) in rgb.data_mut(0)[y * stride..][..width * 3].iter_mut().zip(row.iter()) {
                    *dst = v;
                }
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

/// Equal-size `[H, W, 3]` images tiled row by row into a grid of `columns`, written as PNG
/// atomically.
pub fn write_png_grid(path: &Path, images: &[ArrayView3<'_, u8>], columns: usize) -> Result<()> {
    let Some(first) = images.first() else {
        return Err(Error::io(path, std::io::Error::other("no images to write")));
    };
    let (h, w, _) = first.dim();
    let columns = columns.clamp(1, images.len());
    let mut canvas = ndarray::Array3::<u8>::zeros((images.len().div_ceil(columns) * h, columns * w, 3));
    for (i, img) in images.iter().enumerate() {
        let (x0, y0) = ((i % columns) * w, (i / columns) * h);
        canvas.slice_mut(s![y0..y0 + h, x0..x0 + w, ..]).assign(img);
    }
    write_png(path, canvas.view())
}

/// One `[H, W, 3]` image as PNG, atomically.
pub fn write_png(path: &Path, picture: ArrayView3<'_, u8>) -> Result<()> {
    let (h, w, _) = picture.dim();
    let bytes = picture.as_standard_layout();
    crate::atomic::write_with(path, |tmp| {
        image::save_buffer_with_format(tmp, bytes.as_slice().expect("standard layout"), w as u32, h as u32, image::ColorType::Rgb8, image::ImageFormat::Png)
            .map_err(|e| Error::io(path, std::io::Error::other(e)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panels_upscale_sit_side_by_side_and_get_marked() {
        let clip = Array4::from_shape_fn((2, 2, 3, 3), |(t, y, x, c)| (t * 100 + y * 10 + x + c) as u8);
        let up = upscale(clip.view(), 2);
        assert_eq!(up.dim(), (2, 4, 6, 3));
        assert_eq!(up[[1, 3, 5, 2]], clip[[1, 1, 2, 2]]);
        let pair = side_by_side(&[clip.view(), up.slice(s![.., ..2, ..3, ..])], 1);
        assert_eq!(pair.dim(), (2, 2, 7, 3));
        assert_eq!(pair[[0, 1, 3, 0]], 0, "the gap is black");
        assert_eq!(pair[[1, 1, 6, 0]], up[[1, 1, 2, 0]]);
        let mut marked = up.clone();
        mark_frames(&mut marked, 1, 1, [0, 200, 0]);
        assert_eq!(marked.slice(s![0, 0, 2, ..]).to_vec(), vec![0, 200, 0]);
        assert_eq!(marked[[0, 1, 1, 0]], up[[0, 1, 1, 0]], "inside the border is untouched");
        assert_eq!(marked.index_axis(ndarray::Axis(0), 1), up.index_axis(ndarray::Axis(0), 1));
    }
}
