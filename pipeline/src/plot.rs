//! Line charts of a run's curves, drawn with plotters: as PNG (text in the bundled DejaVu Sans
//! Mono, third_party/fonts/NOTICE.md) or as SVG for the HTML report (text left to the browser).

use std::path::Path;
use std::sync::Once;

use anyhow::{Result, anyhow};
use ndarray::Array3;
use plotters::prelude::*;
use plotters::style::FontStyle;

/// One line of a chart.
#[derive(Clone, Debug)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A chart: series sharing the axes.
#[derive(Clone, Debug)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// Logarithmic y axis (for losses), used when the values span more than a factor of 20.
    pub log_y: bool,
    pub series: Vec<Series>,
}

pub const FONT: &str = "sans-serif";
const WIDTH: u32 = 900;
const HEIGHT: u32 = 420;
const COLOURS: [RGBColor; 6] = [RGBColor(31, 119, 180), RGBColor(214, 39, 40), RGBColor(44, 160, 44), RGBColor(255, 127, 14), RGBColor(148, 103, 189), RGBColor(140, 86, 75)];

pub fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let bytes: &'static [u8] = include_bytes!("../../third_party/fonts/DejaVuSansMono.ttf");
        if plotters::style::register_font(FONT, FontStyle::Normal, bytes).is_err() {
            tracing::warn!("the bundled chart font did not load; charts will have no text");
        }
    });
}

/// Draws `charts` one above the other into a PNG at `path`, written atomically.
pub fn write_png(path: &Path, charts: &[Chart]) -> Result<()> {
    register_font();
    let (w, h) = (WIDTH, HEIGHT * charts.len().max(1) as u32);
    let mut rgb = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("drawing {}: {e}", path.display()))?;
        for (area, chart) in root.split_evenly((charts.len().max(1), 1)).iter().zip(charts) {
            draw(area, chart).map_err(|e| anyhow!("drawing {} ({}): {e}", path.display(), chart.title))?;
        }
        root.present().map_err(|e| anyhow!("drawing {}: {e}", path.display()))?;
    }
    let image = Array3::from_shape_vec((h as usize, w as usize, 3), rgb).expect("buffer of the image's size");
    Ok(video_io::encode::write_png(path, image.view())?)
}

/// One chart as an SVG document of `width × height` pixels.
pub fn svg(chart: &Chart, (width, height): (u32, u32)) -> Result<String> {
    register_font(); // plotters lays text out with the font's metrics, whatever the backend
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("drawing {}: {e}", chart.title))?;
        draw(&root, chart).map_err(|e| anyhow!("drawing {}: {e}", chart.title))?;
        root.present().map_err(|e| anyhow!("drawing {}: {e}", chart.title))?;
    }
    Ok(text)
}

fn draw<DB: DrawingBackend>(area: &DrawingArea<DB, plotters::coord::Shift>, chart: &Chart) -> Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    let points = || chart.series.iter().flat_map(|s| s.points.iter()).filter(|(x, y)| x.is_finite() && y.is_finite() && (!chart.log_y || *y > 0.0));
    let (x0, x1) = points().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &(x, _)| (a.min(x), b.max(x)));
    let (y0, y1) = points().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &(_, y)| (a.min(y), b.max(y)));
    if !x0.is_finite() {
        area.titled(&format!("{}: no data yet", chart.title), (FONT, 18))?;
        return Ok(());
    }
    let (x1, y1) = (if x1 > x0 { x1 } else { x0 + 1.0 }, if y1 > y0 { y1 } else { y0 + y0.abs().max(1e-3) });
    // The key sits in a band of its own below the axes, so it never hides a curve.
    let area = area.titled(&chart.title, (FONT, 18))?;
    let (width, height) = area.dim_in_pixel();
    let rows = key_layout(chart, width as i32);
    let key_height = rows.last().map_or(0, |&(_, y)| y + KEY_ROW);
    let (plot, key) = area.split_vertically(height as i32 - key_height);
    draw_key(&key, chart, &rows)?;
    let mut builder = ChartBuilder::on(&plot);
    // The right margin holds half of the last x tick's label ("200000" is about 48 px at 13 px),
    // which plotters centres on the plot's right edge.
    builder.margin(12).margin_right(32).x_label_area_size(36).y_label_area_size(64);
    macro_rules! finish {
        ($ctx:expr) => {{
            let mut ctx = $ctx;
            ctx.configure_mesh()
                .x_desc(chart.x_label.as_str())
                .y_desc(chart.y_label.as_str())
                .x_label_formatter(&|v| tick(*v))
                .y_label_formatter(&|v| tick(*v))
                .label_style((FONT, 13))
                .draw()?;
            for (i, s) in chart.series.iter().enumerate() {
                let kept = s.points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite() && (!chart.log_y || *y > 0.0));
                ctx.draw_series(LineSeries::new(kept, colour(i).stroke_width(2)))?;
            }
        }};
    }
    if chart.log_y && y1 > 20.0 * y0 {
        finish!(builder.build_cartesian_2d(x0..x1, (y0..y1).log_scale())?);
    } else {
        finish!(builder.build_cartesian_2d(x0..x1, y0..y1)?);
    }
    Ok(())
}

const KEY_ROW: i32 = 20;
/// The key starts under the plot's left edge: the y labels' 64 px and the 12 px margin.
const KEY_LEFT: i32 = 76;

/// Where each series' entry of the key starts, left to right and wrapped at `width`: a 24 px line
/// sample, then its name in the bundled monospace font (about 8 px a character at 13 px).
fn key_layout(chart: &Chart, width: i32) -> Vec<(i32, i32)> {
    let (mut x, mut y) = (KEY_LEFT, 0);
    chart
        .series
        .iter()
        .map(|s| {
            let w = 30 + 8 * s.name.chars().count() as i32 + 18;
            if x > KEY_LEFT && x + w > width {
                (x, y) = (KEY_LEFT, y + KEY_ROW);
            }
            x += w;
            (x - w, y)
        })
        .collect()
}

fn colour(series: usize) -> RGBColor {
    COLOURS[series % COLOURS.len()]
}

/// Each series' colour as a line, then its name, at the places `key_layout` gave.
fn draw_key<DB: DrawingBackend>(key: &DrawingArea<DB, plotters::coord::Shift>, chart: &Chart, at: &[(i32, i32)]) -> Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    let font = (FONT, 13).into_font().color(&BLACK);
    for (i, (s, &(x, y))) in chart.series.iter().zip(at).enumerate() {
        let mid = y + KEY_ROW / 2;
        key.draw(&PathElement::new(vec![(x, mid), (x + 24, mid)], colour(i).stroke_width(2)))?;
        key.draw(&Text::new(s.name.clone(), (x + 30, mid - 7), font.clone()))?;
    }
    Ok(())
}

/// A short axis label: plain digits for moderate values, scientific notation otherwise.
fn tick(v: f64) -> String {
    let a = v.abs();
    if v == v.round() && a < 1e7 {
        format!("{v:.0}")
    } else if (1e-2..1e4).contains(&a) {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        format!("{v:.1e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_render_to_svg_with_their_title_and_legend() {
        let chart = Chart { title: "lr".into(), x_label: "samples".into(), y_label: "lr".into(), log_y: false, series: vec![Series { name: "warm-up".into(), points: vec![(0.0, 0.0), (10.0, 1e-3)] }] };
        let text = svg(&chart, (400, 200)).unwrap();
        assert!(text.starts_with("<svg") && text.contains("warm-up") && text.contains("<polyline") && text.matches("<text").count() > 3, "{text}");
    }

    #[test]
    fn the_key_wraps_below_the_axes_and_stays_inside_the_chart() {
        let series = |names: &[&str]| names.iter().map(|n| Series { name: (*n).into(), points: vec![(0.0, 1.0)] }).collect();
        let chart = |names: &[&str]| Chart { title: "t".into(), x_label: "x".into(), y_label: "y".into(), log_y: false, series: series(names) };
        let names = ["sample", "best of 4", "last context frame repeated"];
        // Room for all three on one row at 900 px; at 200 px each needs a row of its own.
        assert_eq!(key_layout(&chart(&names), 900).iter().map(|p| p.1).collect::<Vec<_>>(), [0, 0, 0]);
        let narrow = key_layout(&chart(&names), 200);
        assert_eq!(narrow.iter().map(|p| p.1).collect::<Vec<_>>(), [0, KEY_ROW, 2 * KEY_ROW]);
        assert!(narrow.iter().all(|&(x, _)| x == KEY_LEFT), "{narrow:?}");
        assert!(key_layout(&chart(&[]), 900).is_empty());
    }

    #[test]
    fn charts_render_to_a_png_with_their_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.png");
        let line = |name: &str, f: fn(f64) -> f64| Series { name: name.into(), points: (1..50).map(|i| (i as f64 * 10.0, f(i as f64))).collect() };
        let charts = [
            Chart { title: "loss".into(), x_label: "samples".into(), y_label: "loss".into(), log_y: true, series: vec![line("train", |i| 1.0 / i), line("val", |i| 2.0 / i)] },
            Chart { title: "empty".into(), x_label: "x".into(), y_label: "y".into(), log_y: false, series: vec![] },
        ];
        write_png(&path, &charts).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (WIDTH, 2 * HEIGHT));
        assert_eq!([tick(2400.0), tick(0.25), tick(1e-5), tick(-3.5)], ["2400", "0.25", "1.0e-5", "-3.5"]);
        // Both line colours are drawn somewhere in the first chart.
        for c in [COLOURS[0], COLOURS[1]] {
            assert!(img.pixels().any(|p| p.0 == [c.0, c.1, c.2]), "colour {c:?} missing");
        }
    }
}

/// A grid of values, one coloured cell each (`sid2 sweep`): rows × columns, row-major.
#[derive(Clone, Debug)]
pub struct Heatmap {
    pub title: String,
    pub rows: Vec<String>,
    pub columns: Vec<String>,
    pub values: Vec<f64>,
    /// The cell framed as the best.
    pub best: usize,
}

/// Draws `map` into a PNG at `path`: each cell coloured from dark (lowest) to light (highest) and
/// labelled with its value; a value that is not a number is left grey.
pub fn write_heatmaps(path: &Path, map: &Heatmap) -> Result<()> {
    register_font();
    let (cw, ch, left, top) = (170i32, 44i32, 140i32, 64i32);
    let (cols, rows) = (map.columns.len().max(1) as i32, map.rows.len().max(1) as i32);
    // Wide enough for the title too (the bundled monospace font is about 11 px a character at 18).
    let w = ((left + cw * cols + 16) as u32).max(16 + 11 * map.title.chars().count() as u32);
    let h = (top + ch * rows + 16) as u32;
    let finite: Vec<f64> = map.values.iter().copied().filter(|v| v.is_finite()).collect();
    let (lo, hi) = finite.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    let mut rgb = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        let err = |e: DrawingAreaErrorKind<_>| anyhow!("drawing {}: {e}", path.display());
        root.fill(&WHITE).map_err(err)?;
        let font = |size: i32| (FONT, size).into_font().color(&BLACK);
        root.draw(&Text::new(map.title.clone(), (8, 8), font(18))).map_err(err)?;
        for (j, name) in map.columns.iter().enumerate() {
            root.draw(&Text::new(name.clone(), (left + cw * j as i32 + 4, top - 22), font(13))).map_err(err)?;
        }
        for (i, name) in map.rows.iter().enumerate() {
            root.draw(&Text::new(name.clone(), (8, top + ch * i as i32 + ch / 2 - 7), font(14))).map_err(err)?;
        }
        for (k, &v) in map.values.iter().enumerate() {
            let (i, j) = ((k / map.columns.len().max(1)) as i32, (k % map.columns.len().max(1)) as i32);
            let (x0, y0) = (left + cw * j, top + ch * i);
            let colour = match v.is_finite() {
                true => {
                    let f = if hi > lo { (v - lo) / (hi - lo) } else { 1.0 };
                    RGBColor((40.0 + 215.0 * f) as u8, (60.0 + 170.0 * f) as u8, (120.0 - 60.0 * f) as u8)
                }
                false => RGBColor(200, 200, 200),
            };
            root.draw(&Rectangle::new([(x0, y0), (x0 + cw - 2, y0 + ch - 2)], colour.filled())).map_err(err)?;
            if k == map.best {
                root.draw(&Rectangle::new([(x0, y0), (x0 + cw - 2, y0 + ch - 2)], BLACK.stroke_width(3))).map_err(err)?;
            }
            let label = if v.is_finite() { format!("{v:.3}") } else { "-".to_owned() };
            root.draw(&Text::new(label, (x0 + 8, y0 + ch / 2 - 8), font(16))).map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    let image = Array3::from_shape_vec((h as usize, w as usize, 3), rgb).expect("buffer of the image's size");
    Ok(video_io::encode::write_png(path, image.view())?)
}
