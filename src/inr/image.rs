//! Loading images as targets in [0, 1] and writing 8-bit PNGs.

use super::idx;
use crate::error::{Error, Param, Result};
use std::path::Path;

/// An image as the fit sees it: row-major `height × width × channels`, values in [0, 1].
/// Sample `i = (r·W + c)·C + ch`, matching the (rows, cols, channels) grid of the features.
#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    pub height: usize,
    pub width: usize,
    /// 1 (gray) or 3 (RGB).
    pub channels: usize,
    pub data: Vec<f32>,
}

impl Image {
    pub fn pixels(&self) -> usize {
        self.height * self.width
    }

    pub fn kind(&self) -> &'static str {
        if self.channels == 1 {
            "gray"
        } else {
            "RGB"
        }
    }

    /// The 8-bit values the PNG stores (round to nearest, clamped).
    pub fn to_u8(&self) -> Vec<u8> {
        self.data.iter().map(|&v| quantize(v)).collect()
    }

    /// The image after 8-bit quantisation, as floats (what `reconstruction.png` holds).
    pub fn quantized(&self) -> Image {
        Image {
            data: self
                .data
                .iter()
                .map(|&v| quantize(v) as f32 / 255.0)
                .collect(),
            ..self.clone()
        }
    }

    /// Resamples to `height × width` (Lanczos3, which widens its kernel when shrinking, so it
    /// also antialiases), clamped to [0, 1].
    pub fn resized(&self, height: usize, width: usize) -> Image {
        use image::imageops::{resize, FilterType};
        let (w, h) = (self.width as u32, self.height as u32);
        let (nw, nh) = (width as u32, height as u32);
        let data: Vec<f32> = if self.channels == 1 {
            let buf = image::ImageBuffer::<image::Luma<f32>, _>::from_raw(w, h, self.data.clone())
                .expect("buffer matches its size");
            resize(&buf, nw, nh, FilterType::Lanczos3).into_raw()
        } else {
            let buf = image::ImageBuffer::<image::Rgb<f32>, _>::from_raw(w, h, self.data.clone())
                .expect("buffer matches its size");
            resize(&buf, nw, nh, FilterType::Lanczos3).into_raw()
        };
        Image {
            height,
            width,
            channels: self.channels,
            data: data.into_iter().map(|v| v.clamp(0.0, 1.0)).collect(),
        }
    }

    /// Encodes as an 8-bit PNG with the image's channels.
    pub fn to_png(&self) -> Result<Vec<u8>> {
        use image::ImageEncoder;
        let color = match self.channels {
            1 => image::ExtendedColorType::L8,
            3 => image::ExtendedColorType::Rgb8,
            c => {
                return Err(Error::invalid(
                    Param::Outputs,
                    format!("cannot write a PNG with {c} channels (1 or 3 supported)"),
                ))
            }
        };
        let mut buf = Vec::new();
        image::codecs::png::PngEncoder::new(&mut buf)
            .write_image(&self.to_u8(), self.width as u32, self.height as u32, color)
            .map_err(|e| Error::Io {
                path: "PNG".into(),
                msg: format!("cannot encode the image: {e}"),
            })?;
        Ok(buf)
    }

    /// Writes an 8-bit PNG atomically.
    pub fn save_png(&self, path: &Path) -> Result<()> {
        crate::output::write_bytes(path, &self.to_png()?)
    }
}

fn quantize(v: f32) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0).round() as u8
}

/// Loads an image file (any format the `image` crate reads) or, with `index`, one digit of an
/// MNIST IDX file. 16-bit samples are scaled by 1/65535. Transparent pixels are composited
/// onto white (the usual page background), so the fit and the reconstruction have no alpha.
pub fn load(path: &Path, index: Option<usize>) -> Result<Image> {
    let err = |msg: String| Error::Image {
        path: path.to_path_buf(),
        msg,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    if meta.is_dir() {
        return Err(err("this is a directory, not an image file".into()));
    }
    if meta.len() == 0 {
        return Err(err("the file is empty (0 bytes)".into()));
    }
    if idx::is_idx(path) {
        return idx::load_digit(path, index.unwrap_or(0));
    }
    if index.is_some() {
        return Err(Error::invalid(
            Param::Index,
            "picks one image of an MNIST IDX file (*.idx3-ubyte or *.idx3-ubyte.gz); remove it for other images",
        ));
    }
    let reader = image::ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .map_err(|e| err(e.to_string()))?;
    let img = reader.decode().map_err(|e| {
        err(format!(
            "{e} (is it a complete PNG, JPEG, TIFF, BMP, GIF or WebP file?)"
        ))
    })?;
    from_dynamic(&img).map_err(err)
}

/// Converts a decoded image: gray stays one channel, colour becomes RGB, alpha is composited
/// onto white.
pub fn from_dynamic(img: &image::DynamicImage) -> std::result::Result<Image, String> {
    let (width, height) = (img.width() as usize, img.height() as usize);
    if width == 0 || height == 0 {
        return Err(format!("the image has no pixels ({width}×{height})"));
    }
    let over_white = |v: f32, a: f32| {
        let (v, a) = (v.clamp(0.0, 1.0), a.clamp(0.0, 1.0));
        v * a + (1.0 - a)
    };
    // The *32f conversions scale 8-bit by 1/255 and 16-bit by 1/65535.
    let (channels, data) = if img.color().has_color() {
        let rgba = img.to_rgba32f();
        let mut data = Vec::with_capacity(width * height * 3);
        for p in rgba.pixels() {
            for c in 0..3 {
                data.push(over_white(p.0[c], p.0[3]));
            }
        }
        (3, data)
    } else {
        let la = img.to_luma_alpha32f();
        (1, la.pixels().map(|p| over_white(p.0[0], p.0[1])).collect())
    };
    if let Some(i) = data.iter().position(|v: &f32| !v.is_finite()) {
        return Err(format!("non-finite sample value at index {i}"));
    }
    Ok(Image {
        height,
        width,
        channels,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{DynamicImage, ImageBuffer, Luma, LumaA, Rgba};

    #[test]
    fn sixteen_bit_is_scaled_by_65535() {
        let img = ImageBuffer::from_fn(2, 1, |x, _| Luma([if x == 0 { 65535u16 } else { 32768 }]));
        let im = from_dynamic(&DynamicImage::ImageLuma16(img)).unwrap();
        assert_eq!(im.channels, 1);
        assert_eq!(im.data[0], 1.0);
        assert!((im.data[1] - 32768.0 / 65535.0).abs() < 1e-6);
    }

    #[test]
    fn alpha_is_composited_onto_white() {
        let img = ImageBuffer::from_fn(2, 1, |x, _| {
            if x == 0 {
                Rgba([0u8, 0, 0, 0]) // fully transparent black → white
            } else {
                Rgba([255, 0, 0, 255])
            }
        });
        let im = from_dynamic(&DynamicImage::ImageRgba8(img)).unwrap();
        assert_eq!(im.channels, 3);
        assert_eq!(im.data, vec![1.0, 1.0, 1.0, 1.0, 0.0, 0.0]);
        let gray = ImageBuffer::from_fn(1, 1, |_, _| LumaA([0u8, 128]));
        let g = from_dynamic(&DynamicImage::ImageLumaA8(gray)).unwrap();
        assert!((g.data[0] - (1.0 - 128.0 / 255.0)).abs() < 1e-6);
    }

    #[test]
    fn png_round_trip_keeps_channels_and_row_major_order() {
        let im = Image {
            height: 2,
            width: 3,
            channels: 3,
            data: (0..18).map(|i| i as f32 / 17.0).collect(),
        };
        let bytes = im.to_png().unwrap();
        let back = from_dynamic(&image::load_from_memory(&bytes).unwrap()).unwrap();
        assert_eq!((back.height, back.width, back.channels), (2, 3, 3));
        assert_eq!(back, im.quantized());
    }
}
