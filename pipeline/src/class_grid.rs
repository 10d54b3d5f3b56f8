//! Class-conditional images as a grid a person can read: one row per class, in label order, the
//! class's name (or its index, where no names are known) at the row's start.

use std::path::Path;

use anyhow::{Result, anyhow};
use ndarray::{Array3, ArrayView3, s};
use plotters::prelude::*;

/// Pixels between images, and around the grid.
const GAP: usize = 2;
/// Width of the name column, and the text's height.
const NAME_WIDTH: usize = 104;
const TEXT: u32 = 14;

/// One row: its name and its images (`[H, W, 3]`, all of one size).
pub struct Row<'a> {
    pub name: String,
    pub images: Vec<ArrayView3<'a, u8>>,
}

/// Groups `images` by `labels` into rows of ascending label, named from `classes` where it has
/// the label (else the label's index).
pub fn rows<'a>(images: &'a [ArrayView3<'a, u8>], labels: &[i32], classes: &[String]) -> Vec<Row<'a>> {
    let mut present: Vec<i32> = labels.to_vec();
    present.sort_unstable();
    present.dedup();
    present
        .into_iter()
        .map(|l| Row {
            name: classes.get(l as usize).filter(|n| !n.is_empty()).cloned().unwrap_or_else(|| format!("class {l}")),
            images: images.iter().zip(labels).filter(|&(_, &m)| m == l).map(|(i, _)| i.view()).collect(),
        })
        .collect()
}

/// Draws `rows` into an RGB canvas: white background, names in the bundled font.
pub fn draw(rows: &[Row<'_>]) -> Result<Array3<u8>> {
    let (h, w) = rows.iter().flat_map(|r| r.images.first()).map(|i| (i.dim().0, i.dim().1)).next().ok_or_else(|| anyhow!("no images to draw"))?;
    let columns = rows.iter().map(|r| r.images.len()).max().unwrap_or(0);
    let (height, width) = (GAP + rows.len() * (h + GAP), NAME_WIDTH + columns * (w + GAP) + GAP);
    let mut canvas = Array3::<u8>::from_elem((height, width, 3), 255);
    for (r, row) in rows.iter().enumerate() {
        let y = GAP + r * (h + GAP);
        for (c, image) in row.images.iter().enumerate() {
            let x = NAME_WIDTH + GAP + c * (w + GAP);
            canvas.slice_mut(s![y..y + h, x..x + w, ..]).assign(image);
        }
    }
    crate::plot::register_font();
    {
        let buffer = canvas.as_slice_mut().expect("a fresh array is contiguous");
        let root = BitMapBackend::with_buffer(buffer, (width as u32, height as u32)).into_drawing_area();
        for (r, row) in rows.iter().enumerate() {
            let y = (GAP + r * (h + GAP) + h / 2) as i32 - TEXT as i32 / 2;
            root.draw_text(&row.name, &(crate::plot::FONT, TEXT).into_font().color(&BLACK), (4, y)).map_err(|e| anyhow!("drawing the class names: {e}"))?;
        }
        root.present().map_err(|e| anyhow!("drawing the class names: {e}"))?;
    }
    Ok(canvas)
}

/// Writes the grid of `rows` as a PNG, atomically.
pub fn write(path: &Path, rows: &[Row<'_>]) -> Result<()> {
    Ok(video_io::encode::write_png(path, draw(rows)?.view())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_row_per_label_in_label_order_named_where_known() {
        let images: Vec<Array3<u8>> = (0..5).map(|i| Array3::from_elem((4, 4, 3), i as u8 * 40)).collect();
        let views: Vec<_> = images.iter().map(|i| i.view()).collect();
        let grid = rows(&views, &[2, 0, 2, 0, 2], &["cat".into(), "dog".into()]);
        let names: Vec<&str> = grid.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["cat", "class 2"]);
        assert_eq!(grid[1].images.len(), 3);
        assert_eq!(grid[1].images[1][[0, 0, 0]], 80, "the row keeps the images' order");
        let canvas = draw(&grid).unwrap();
        assert_eq!(canvas.dim(), (GAP + 2 * (4 + GAP), NAME_WIDTH + 3 * (4 + GAP) + GAP, 3));
        let (x, y) = (NAME_WIDTH + GAP + (4 + GAP), GAP + 4 + GAP);
        assert_eq!(canvas[[y, x, 0]], 80, "row 1, column 1 holds image 2");
        assert!(canvas.slice(s![.., ..NAME_WIDTH, 0]).iter().any(|&v| v < 128), "names are drawn");
    }
}
