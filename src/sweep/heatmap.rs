//! Heatmap PNGs of a sweep, drawn with plotters: m on the y axis, s on the x axis, each cell
//! coloured by its median over seeds (fixed ranges per task, so runs compare) with the value
//! printed in it, and a colour bar. Method maps use viridis, difference maps a diverging
//! blue–grey–red map centred on 0.

use super::summary::Map;
use crate::error::{Error, Result};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;
use std::sync::OnceLock;

/// DejaVu Sans (assets/fonts/README.md): headless machines have no fonts to find.
const FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";

/// Nominal cell size and the space around the cells.
pub const CELL_W: u32 = 84;
pub const CELL_H: u32 = 48;
const MARGIN: u32 = 12;
const TITLE: u32 = 40;
const LEFT: u32 = 80;
const BOTTOM: u32 = 56;
const BAR: u32 = 110;

/// Viridis at 0, 1/8, …, 1 (matplotlib's values).
const VIRIDIS: [(u8, u8, u8); 9] = [
    (68, 1, 84),
    (71, 44, 122),
    (59, 81, 139),
    (44, 113, 142),
    (33, 144, 141),
    (39, 173, 129),
    (92, 200, 99),
    (170, 220, 50),
    (253, 231, 37),
];
/// Blue, grey, red (matplotlib's coolwarm at 0, ½, 1, with its quarter points).
const COOLWARM: [(u8, u8, u8); 5] = [
    (59, 76, 192),
    (141, 176, 254),
    (221, 221, 221),
    (244, 154, 123),
    (180, 4, 38),
];
/// Cells with no value: blank (the grey of a zero difference would read as a value).
pub const MISSING: (u8, u8, u8) = (255, 255, 255);

/// The least space for the cells, so that a small grid still has room for its title and
/// colour bar.
const MIN_W: u32 = 4 * CELL_W;
const MIN_H: u32 = 3 * CELL_H;

/// The image size for `rows` × `cols` cells.
pub fn size(rows: usize, cols: usize) -> (u32, u32) {
    (
        2 * MARGIN + LEFT + (cols as u32 * CELL_W).max(MIN_W) + BAR,
        TITLE + 2 * MARGIN + (rows as u32 * CELL_H).max(MIN_H) + BOTTOM,
    )
}

/// The colour of `v` on a scale from `lo` to `hi` (clamped at the ends).
pub fn colour(v: f64, lo: f64, hi: f64, diverging: bool) -> (u8, u8, u8) {
    let stops: &[(u8, u8, u8)] = if diverging { &COOLWARM } else { &VIRIDIS };
    let t = ((v - lo) / (hi - lo)).clamp(0.0, 1.0);
    let x = t * (stops.len() - 1) as f64;
    let k = (x.floor() as usize).min(stops.len() - 2);
    let f = x - k as f64;
    let mix = |a: u8, b: u8| (a as f64 + (b as f64 - a as f64) * f).round() as u8;
    let (a, b) = (stops[k], stops[k + 1]);
    (mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// A rendered heatmap: RGB pixels, and where each cell landed (for tests and callers that
/// annotate it further).
pub struct Picture {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
    /// `cells[i][j]`: the pixel box (x0, y0, x1, y1) of m = `neurons[i]`, s = `nonzeros[j]`.
    pub cells: Vec<Vec<(i32, i32, i32, i32)>>,
}

impl Picture {
    pub fn pixel(&self, x: i32, y: i32) -> (u8, u8, u8) {
        let k = 3 * (y as usize * self.width as usize + x as usize);
        (self.rgb[k], self.rgb[k + 1], self.rgb[k + 2])
    }
}

fn font() -> std::result::Result<(), String> {
    static REGISTERED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            plotters::style::register_font(FAMILY, FontStyle::Normal, FONT)
                .map_err(|_| "the embedded font cannot be read".to_string())
        })
        .clone()
}

fn rgb(c: (u8, u8, u8)) -> RGBColor {
    RGBColor(c.0, c.1, c.2)
}

/// Draws `map` into an RGB buffer.
pub fn render(map: &Map) -> std::result::Result<Picture, String> {
    font()?;
    let (rows, cols) = (map.neurons.len(), map.nonzeros.len());
    let (width, height) = size(rows, cols);
    let (lo, hi, diverging) = map.range();
    let mut buf = vec![255u8; (width * height * 3) as usize];
    let mut boxes = vec![vec![(0, 0, 0, 0); cols]; rows];
    {
        let e = |e: &dyn std::fmt::Display| e.to_string();
        let root = BitMapBackend::with_buffer(&mut buf, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|x| e(&x))?;
        let body = root
            .titled(&map.title(), (FAMILY, 20).into_font())
            .map_err(|x| e(&x))?;
        let (main, bar) = body.split_horizontally(width - BAR);
        let label = (FAMILY, 15).into_font();

        // Cell (i, j) spans 2j..2j+2 by 2i..2i+2: integer coordinates (whose labels plotters
        // formats) with a tick at each centre.
        let centres = |n: usize| (0..n as i32).map(|k| 2 * k + 1).collect::<Vec<_>>();
        let mut chart = ChartBuilder::on(&main)
            .margin(MARGIN)
            .x_label_area_size(BOTTOM)
            .y_label_area_size(LEFT)
            .build_cartesian_2d(
                (0..2 * cols as i32).with_key_points(centres(cols)),
                (0..2 * rows as i32).with_key_points(centres(rows)),
            )
            .map_err(|x| e(&x))?;
        let at = |n: &[usize], v: i32| {
            n.get((v / 2) as usize)
                .map_or(String::new(), |x| x.to_string())
        };
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("s (nonzeros)")
            .y_desc("m (neurons)")
            .x_label_formatter(&|v| at(&map.nonzeros, *v))
            .y_label_formatter(&|v| at(&map.neurons, *v))
            .label_style(label.clone())
            .axis_desc_style(label.clone())
            .draw()
            .map_err(|x| e(&x))?;

        let d = map.metric.decimals;
        for (i, row) in map.cells.iter().enumerate() {
            for (j, stat) in row.iter().enumerate() {
                let (x, y) = (2 * j as i32, 2 * i as i32);
                let fill = stat
                    .median
                    .map_or(MISSING, |v| colour(v, lo, hi, diverging));
                // Filled, then outlined in white so that equal neighbours stay apart.
                let corners = [(x, y), (x + 2, y + 2)];
                chart
                    .draw_series([
                        Rectangle::new(corners, rgb(fill).filled()),
                        Rectangle::new(corners, WHITE.stroke_width(1)),
                    ])
                    .map_err(|x| e(&x))?;
                // Dark text on light cells, white on dark ones.
                let luma = 0.299 * fill.0 as f64 + 0.587 * fill.1 as f64 + 0.114 * fill.2 as f64;
                let ink = if luma > 140.0 { BLACK } else { WHITE };
                let text = super::summary::number(stat.median, d);
                let style = label
                    .clone()
                    .color(&ink)
                    .pos(Pos::new(HPos::Center, VPos::Center));
                chart
                    .draw_series([Text::new(text, (x + 1, y + 1), style)])
                    .map_err(|x| e(&x))?;
                let (x0, y1) = chart.backend_coord(&(x, y));
                let (x1, y0) = chart.backend_coord(&(x + 2, y + 2));
                boxes[i][j] = (x0, y0, x1, y1);
            }
        }

        // The colour bar: the scale drawn as thin bands, labelled on its right.
        let mut scale = ChartBuilder::on(&bar)
            .margin(MARGIN)
            .margin_left(0)
            .x_label_area_size(BOTTOM)
            .right_y_label_area_size(BAR - 40)
            .build_cartesian_2d(0.0..1.0, lo..hi)
            .map_err(|x| e(&x))?;
        scale
            .configure_mesh()
            .disable_mesh()
            .disable_x_axis()
            .y_labels(6)
            .y_desc(if diverging {
                format!("Δ {}", map.metric.label)
            } else {
                map.metric.label.to_string()
            })
            .label_style(label.clone())
            .axis_desc_style(label.clone())
            .draw()
            .map_err(|x| e(&x))?;
        let bands = 200;
        let step = (hi - lo) / bands as f64;
        scale
            .draw_series((0..bands).map(|k| {
                let v0 = lo + k as f64 * step;
                let c = colour(v0 + step / 2.0, lo, hi, diverging);
                Rectangle::new([(0.0, v0), (1.0, v0 + step)], rgb(c).filled())
            }))
            .map_err(|x| e(&x))?;
        root.present().map_err(|x| e(&x))?;
    }
    Ok(Picture {
        width,
        height,
        rgb: buf,
        cells: boxes,
    })
}

/// Renders `map` and writes it as a PNG, atomically.
pub fn write(path: &Path, map: &Map) -> Result<()> {
    use image::ImageEncoder;
    let err = |msg: String| Error::Io {
        path: path.to_path_buf(),
        msg: format!("cannot draw the heatmap: {msg}"),
    };
    let pic = render(map).map_err(err)?;
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(
            &pic.rgb,
            pic.width,
            pic.height,
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|e| err(e.to_string()))?;
    crate::output::write_bytes(path, &png)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_scales_hit_their_stops_and_clamp() {
        assert_eq!(colour(0.0, 0.0, 50.0, false), VIRIDIS[0]);
        assert_eq!(colour(50.0, 0.0, 50.0, false), VIRIDIS[8]);
        assert_eq!(colour(25.0, 0.0, 50.0, false), VIRIDIS[4]);
        assert_eq!(colour(-7.0, 0.0, 50.0, false), VIRIDIS[0]);
        assert_eq!(colour(200.0, 0.0, 50.0, false), VIRIDIS[8]);
        assert_eq!(colour(0.0, -20.0, 20.0, true), COOLWARM[2]);
        assert_eq!(colour(20.0, -20.0, 20.0, true), COOLWARM[4]);
        // Halfway between two stops: the mean of their channels.
        assert_eq!(colour(3.125, 0.0, 50.0, false), (70, 23, 103));
    }
}
