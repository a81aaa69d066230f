//! Loading images as targets in [0, 1] and writing 8-bit PNGs.

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

/// The most pixels (width × height) spinr reads, resamples to or renders: 64 Mi (8192×8192).
pub const MAX_PIXELS: u64 = 1 << 26;

/// Checks that an image of `height × width` is within [`MAX_PIXELS`].
pub fn check_pixels(height: usize, width: usize) -> Result<()> {
    let px = height as u64 * width as u64;
    if px > MAX_PIXELS {
        return Err(Error::invalid(
            Param::Size,
            format!(
                "{width}×{height} = {px} pixels is over spinr's limit of {MAX_PIXELS} (8192×8192): \
                 it would need {} GiB just for its float values; choose a smaller size",
                (px * 4) >> 30
            ),
        ));
    }
    Ok(())
}

/// Caps on what one image file may make spinr allocate, checked against the header before any
/// pixel is decoded: a few corrupt bytes claiming 100000×100000 pixels are refused at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Longest side in pixels.
    pub max_side: u32,
    /// Width × height.
    pub max_pixels: u64,
}

impl Default for DecodeLimits {
    /// 64 Mi pixels (8192×8192): decoding one costs up to 1 GiB for the decoder's buffer and
    /// 1 GiB for the float conversion, and a fit of it is far beyond the CPU backend anyway.
    fn default() -> Self {
        DecodeLimits {
            max_side: 65535,
            max_pixels: MAX_PIXELS,
        }
    }
}

impl DecodeLimits {
    /// The decoders' own limit: allocations of at most 16 bytes (RGBA f32, the widest pixel)
    /// per allowed pixel. The dimensions are checked by `decode` itself, which names them.
    fn for_decoder(&self) -> image::Limits {
        let mut l = image::Limits::default();
        l.max_alloc = Some(self.max_pixels.saturating_mul(16));
        l
    }
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
    if crate::data::idx::is_idx(path, 3) {
        let raw = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        return digit_from_bytes(&raw, index.unwrap_or(0), path);
    }
    if index.is_some() {
        return Err(Error::invalid(
            Param::Index,
            "picks one image of an MNIST IDX file (*.idx3-ubyte or *.idx3-ubyte.gz); remove it for other images",
        ));
    }
    // Whole in memory (the compressed file is small beside its pixels), so that a file and a
    // buffer go through exactly the same checks.
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    decode(&bytes, &DecodeLimits::default()).map_err(err)
}

/// Digit `index` of IDX3 file bytes (plain or gzipped), scaled to [0, 1]; `path` only names
/// the file in messages.
pub fn digit_from_bytes(raw: &[u8], index: usize, path: &Path) -> Result<Image> {
    let idx = crate::data::idx::parse(raw, 3).map_err(|msg| Error::Image {
        path: path.to_path_buf(),
        msg,
    })?;
    if index >= idx.count() {
        return Err(Error::invalid(
            Param::Index,
            format!(
                "{index} is out of range: {} holds {} images (0 to {})",
                path.display(),
                idx.count(),
                idx.count().saturating_sub(1)
            ),
        ));
    }
    Ok(Image {
        height: idx.dims[1],
        width: idx.dims[2],
        channels: 1,
        data: idx.item(index).iter().map(|&b| b as f32 / 255.0).collect(),
    })
}

/// Decodes an image file held in memory (PNG, JPEG, TIFF, BMP, GIF or WebP, recognised by its
/// content) with the same checks and conversions as [`load`].
pub fn load_from_bytes(bytes: &[u8], limits: &DecodeLimits) -> Result<Image> {
    let err = |msg: String| Error::Image {
        path: "(image bytes in memory)".into(),
        msg,
    };
    if bytes.is_empty() {
        return Err(err("the file is empty (0 bytes)".into()));
    }
    decode(bytes, limits).map_err(err)
}

fn decode(bytes: &[u8], limits: &DecodeLimits) -> std::result::Result<Image, String> {
    check_tiff_tags(bytes)?;
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| e.to_string())?;
    reader.limits(limits.for_decoder());
    let too_large = |what: String| {
        format!(
            "{what}, more than spinr decodes (at most {} pixels, {} per side): the file is \
             corrupt, or resize the image first",
            limits.max_pixels, limits.max_side
        )
    };
    let fail = |e: image::ImageError| match e {
        image::ImageError::Limits(e) => too_large(format!("decoding needs too much ({e})")),
        e => format!("{e} (is it a complete PNG, JPEG, TIFF, BMP, GIF or WebP file?)"),
    };
    let decoder = reader.into_decoder().map_err(fail)?;
    let (w, h) = image::ImageDecoder::dimensions(&decoder);
    if w.max(h) > limits.max_side || w as u64 * h as u64 > limits.max_pixels {
        return Err(too_large(format!("the header says {w}×{h} pixels")));
    }
    let img = image::DynamicImage::from_decoder(decoder).map_err(fail)?;
    from_dynamic(&img)
}

/// The TIFF decoder reserves room for a tag's values from the count in its header, before
/// any limit can be set (up to 256 MiB from a 1 KB file). A tag's values are stored in the
/// file, so a count whose values would not fit in it is corrupt: refuse it here. Only the
/// first directory is read when the decoder is created; later reads honour the limits.
fn check_tiff_tags(b: &[u8]) -> std::result::Result<(), String> {
    let le = match b.get(..2) {
        Some(b"II") => true,
        Some(b"MM") => false,
        _ => return Ok(()),
    };
    let int = |at: u64, n: usize| -> Option<u64> {
        let at = usize::try_from(at).ok()?;
        let bytes = b.get(at..at.checked_add(n)?)?;
        Some(if le {
            bytes.iter().rev().fold(0, |v, &x| v << 8 | x as u64)
        } else {
            bytes.iter().fold(0, |v, &x| v << 8 | x as u64)
        })
    };
    // Classic TIFF: 16-bit entry counts, 12-byte entries, 32-bit value counts; BigTIFF: 64-bit
    // counts, 20-byte entries. Anything malformed is left to the decoder to report.
    let (big, ifd) = match int(2, 2) {
        Some(42) => (false, int(4, 4)),
        Some(43) => (true, int(8, 8)),
        _ => return Ok(()),
    };
    let Some(ifd) = ifd else { return Ok(()) };
    let (entries, first, size) = if big {
        (int(ifd, 8), ifd.saturating_add(8), 20)
    } else {
        (int(ifd, 2), ifd.saturating_add(2), 12)
    };
    let Some(entries) = entries else {
        return Ok(());
    };
    let len = b.len() as u64;
    for e in 0..entries {
        let at = first.saturating_add(e.saturating_mul(size));
        let (Some(kind), Some(count)) = (
            int(at.saturating_add(2), 2),
            int(at.saturating_add(4), if big { 8 } else { 4 }),
        ) else {
            break; // past the end: the decoder reports the truncation
        };
        let width = match kind {
            1 | 2 | 6 | 7 => 1,
            3 | 8 => 2,
            4 | 9 | 11 | 13 => 4,
            5 | 10 | 12 | 16..=18 => 8,
            _ => continue,
        };
        if count.saturating_mul(width) > len {
            return Err(format!(
                "corrupt TIFF: tag {} claims {count} values, more than the {len}-byte file holds",
                int(at, 2).unwrap_or(0)
            ));
        }
    }
    Ok(())
}

/// Integer images scale into [0, 1]; a float image (32-bit TIFF) must already lie there. Its
/// values are intensities as they are, and clamping an HDR image would fit another image
/// silently, so a value outside [0, 1] (or not a number) is an error naming the pixel.
fn check_float_range(img: &image::DynamicImage) -> std::result::Result<(), String> {
    let (values, channels): (&[f32], usize) = match img {
        image::DynamicImage::ImageRgb32F(b) => (b.as_raw(), 3),
        image::DynamicImage::ImageRgba32F(b) => (b.as_raw(), 4),
        _ => return Ok(()),
    };
    let Some(i) = values.iter().position(|v| !(0.0..=1.0).contains(v)) else {
        return Ok(());
    };
    let (pixel, channel) = (i / channels, i % channels);
    let (row, column) = (pixel / img.width() as usize, pixel % img.width() as usize);
    let what = if values[i].is_finite() {
        "outside [0, 1]"
    } else {
        "not a finite number"
    };
    Err(format!(
        "the float image has {} ({what}) at row {row}, column {column}, channel \
         {channel}; spinr fits intensities in [0, 1]: rescale or tone-map it first",
        values[i]
    ))
}

/// Converts a decoded image: gray stays one channel, colour becomes RGB, alpha is composited
/// onto white.
pub fn from_dynamic(img: &image::DynamicImage) -> std::result::Result<Image, String> {
    let (width, height) = (img.width() as usize, img.height() as usize);
    if width == 0 || height == 0 {
        return Err(format!("the image has no pixels ({width}×{height})"));
    }
    check_float_range(img)?;
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
    fn float_images_must_lie_in_the_unit_interval() {
        let ok = ImageBuffer::from_fn(3, 2, |x, _| image::Rgb([0.0f32, 0.5, x as f32 / 2.0]));
        let im = from_dynamic(&DynamicImage::ImageRgb32F(ok)).unwrap();
        assert_eq!((im.data[6], im.data[8]), (0.0, 1.0));
        for (bad, what) in [
            (1.5f32, "1.5 (outside [0, 1])"),
            (-0.25, "-0.25 (outside"),
            (f32::NAN, "NaN (not a finite"),
        ] {
            let img = ImageBuffer::from_fn(3, 2, |x, y| {
                image::Rgba([0.5f32, if (x, y) == (2, 1) { bad } else { 0.5 }, 0.5, 1.0])
            });
            let e = from_dynamic(&DynamicImage::ImageRgba32F(img)).unwrap_err();
            assert!(
                e.contains(what) && e.contains("row 1, column 2, channel 1"),
                "{e}"
            );
        }
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
    fn huge_headers_are_refused_before_decoding() {
        let im = Image {
            height: 3,
            width: 4,
            channels: 3,
            data: (0..36).map(|i| i as f32 / 35.0).collect(),
        };
        // A PNG whose IHDR claims 100000×100000, with its CRC fixed.
        let mut png = im.to_png().unwrap();
        png[16..24].copy_from_slice(&[0, 1, 0x86, 0xa0, 0, 1, 0x86, 0xa0]);
        let mut crc = flate2::Crc::new();
        crc.update(&png[12..29]);
        png[29..33].copy_from_slice(&crc.sum().to_be_bytes());
        let e = load_from_bytes(&png, &DecodeLimits::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("100000×100000") && e.contains("resize"), "{e}");

        // A TIFF whose first tag claims 8 million values: the decoder would reserve room for
        // them before any limit applies (found by tests/fuzz_readers.rs).
        let mut tiff = std::io::Cursor::new(Vec::new());
        image::DynamicImage::ImageRgb8(image::RgbImage::from_raw(4, 3, im.to_u8()).unwrap())
            .write_to(&mut tiff, image::ImageFormat::Tiff)
            .unwrap();
        let mut tiff = tiff.into_inner();
        assert_eq!(&tiff[..4], b"II*\0");
        let dir = dir_with(&tiff);
        let back = load(&dir.1, None).unwrap();
        assert_eq!(back, im.quantized());
        let ifd = u32::from_le_bytes(tiff[4..8].try_into().unwrap()) as usize;
        tiff[ifd + 6..ifd + 10].copy_from_slice(&8_000_000u32.to_le_bytes());
        let e = load_from_bytes(&tiff, &DecodeLimits::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("corrupt TIFF") && e.contains("8000000 values"),
            "{e}"
        );
    }

    /// Writes bytes to a temporary file (kept alive by the returned guard).
    fn dir_with(bytes: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("image.tif");
        std::fs::write(&p, bytes).unwrap();
        (dir, p)
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
