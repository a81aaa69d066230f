//! MNIST IDX image files (`*-idx3-ubyte`, optionally gzipped): one 8-bit digit as an image.

use super::image::Image;
use crate::error::{Error, Param, Result};
use std::io::Read;
use std::path::Path;

/// Whether a path names an IDX image file (by its name, as MNIST distributes them).
pub fn is_idx(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    name.ends_with("idx3-ubyte")
}

/// Reads the file, gunzipping when it starts with the gzip magic bytes.
fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let err = |msg: String| Error::Image {
        path: path.to_path_buf(),
        msg,
    };
    let raw = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| err(format!("corrupt gzip data: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Image `index` of an IDX3 unsigned-byte file, scaled to [0, 1].
pub fn load_digit(path: &Path, index: usize) -> Result<Image> {
    let err = |msg: String| Error::Image {
        path: path.to_path_buf(),
        msg,
    };
    let data = read_maybe_gz(path)?;
    if data.len() < 16 || data[..4] != [0, 0, 0x08, 0x03] {
        return Err(err(
            "not an IDX3 unsigned-byte image file (magic number 0x00000803 missing)".into(),
        ));
    }
    let dim =
        |k: usize| u32::from_be_bytes(data[4 + 4 * k..8 + 4 * k].try_into().unwrap()) as usize;
    let (count, rows, cols) = (dim(0), dim(1), dim(2));
    let size = rows * cols;
    if size == 0 {
        return Err(err(format!("the images have no pixels ({rows}×{cols})")));
    }
    let expected = count
        .checked_mul(size)
        .and_then(|b| b.checked_add(16))
        .ok_or_else(|| err("header sizes overflow".into()))?;
    if data.len() != expected {
        return Err(err(format!(
            "truncated or corrupt: the header promises {count} images of {rows}×{cols} \
             ({expected} bytes) but the data has {} bytes",
            data.len()
        )));
    }
    if index >= count {
        return Err(Error::invalid(
            Param::Index,
            format!(
                "{index} is out of range: {} holds {count} images (0 to {})",
                path.display(),
                count.saturating_sub(1)
            ),
        ));
    }
    let px = &data[16 + index * size..16 + (index + 1) * size];
    Ok(Image {
        height: rows,
        width: cols,
        channels: 1,
        data: px.iter().map(|&b| b as f32 / 255.0).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx_bytes(count: u32, rows: u32, cols: u32) -> Vec<u8> {
        let mut v = vec![0, 0, 8, 3];
        for x in [count, rows, cols] {
            v.extend(x.to_be_bytes());
        }
        v.extend((0..count * rows * cols).map(|i| (i % 256) as u8));
        v
    }

    #[test]
    fn reads_plain_and_gzipped_files() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = idx_bytes(3, 2, 2);
        let plain = dir.path().join("t-idx3-ubyte");
        std::fs::write(&plain, &bytes).unwrap();
        let gz = dir.path().join("t-idx3-ubyte.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, &bytes).unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();
        for p in [&plain, &gz] {
            assert!(is_idx(p));
            let im = load_digit(p, 2).unwrap();
            assert_eq!((im.height, im.width, im.channels), (2, 2, 1));
            assert_eq!(im.data[0], 8.0 / 255.0);
        }
        let e = load_digit(&plain, 3).unwrap_err().to_string();
        assert!(e.contains("image index") && e.contains("3 images"), "{e}");
    }

    #[test]
    fn truncated_files_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t-idx3-ubyte");
        let mut bytes = idx_bytes(3, 2, 2);
        bytes.pop();
        std::fs::write(&p, &bytes).unwrap();
        let e = load_digit(&p, 0).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
        std::fs::write(&p, b"not an idx file at all").unwrap();
        assert!(load_digit(&p, 0).unwrap_err().to_string().contains("magic"));
    }
}
