//! IDX files (the MNIST distribution format), plain or gzipped: a magic number, the size of
//! every dimension, then unsigned bytes. Images are `*-idx3-ubyte` (count × rows × columns),
//! labels `*-idx1-ubyte` (count).
//!
//! Reading is strict and bounded: the header says how many bytes must follow, a file that has
//! fewer or more is refused, and gzip output is never read past that promise (so a small file
//! cannot expand into an unbounded buffer).

use crate::error::{Error, Result};
use std::io::Read;
use std::path::Path;

/// The dimensions and bytes of one IDX file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Idx {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

impl Idx {
    /// Items (the first dimension).
    pub fn count(&self) -> usize {
        self.dims[0]
    }

    /// Bytes per item (the product of the other dimensions).
    pub fn item_len(&self) -> usize {
        self.dims[1..].iter().product()
    }

    /// Item `i`'s bytes.
    pub fn item(&self, i: usize) -> &[u8] {
        let len = self.item_len();
        &self.data[i * len..(i + 1) * len]
    }
}

/// Whether a path names an IDX file of `rank` dimensions by its name, as MNIST distributes
/// them (`…idx3-ubyte[.gz]` for images, `…idx1-ubyte[.gz]` for labels).
pub fn is_idx(path: &Path, rank: usize) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    name.ends_with(&format!("idx{rank}-ubyte"))
}

/// Gunzips `raw` when it starts with the gzip magic bytes, reading at most `cap` bytes of
/// output.
fn maybe_gunzip(raw: &[u8], cap: u64) -> std::result::Result<std::borrow::Cow<'_, [u8]>, String> {
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw.into());
    }
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(raw)
        .take(cap)
        .read_to_end(&mut out)
        .map_err(|e| format!("corrupt gzip data: {e}"))?;
    Ok(out.into())
}

/// Reads an IDX file of unsigned bytes with `rank` dimensions.
pub fn read(path: &Path, rank: usize) -> Result<Idx> {
    let raw = std::fs::read(path).map_err(|e| Error::Data {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })?;
    parse(&raw, rank).map_err(|msg| Error::Data {
        path: path.to_path_buf(),
        msg,
    })
}

/// Parses IDX bytes (plain or gzipped) of unsigned bytes with `rank` dimensions (1 to 4).
pub fn parse(raw: &[u8], rank: usize) -> std::result::Result<Idx, String> {
    assert!((1..=4).contains(&rank), "IDX ranks are 1 to 4");
    let header = 4 + 4 * rank;
    // The header first, to learn how many bytes the whole file should have.
    let head = maybe_gunzip(raw, header as u64)?;
    if head.len() < header || head[..4] != [0, 0, 0x08, rank as u8] {
        return Err(format!(
            "not an IDX file of unsigned bytes with {rank} dimension{} (magic number \
             0x0000080{rank} missing)",
            if rank == 1 { "" } else { "s" }
        ));
    }
    let dims: Vec<u64> = (0..rank)
        .map(|k| u32::from_be_bytes(head[4 + 4 * k..8 + 4 * k].try_into().expect("4 bytes")) as u64)
        .collect();
    if dims[1..].contains(&0) {
        return Err(format!("the items have no bytes (dimensions {dims:?})"));
    }
    let expected = dims
        .iter()
        .try_fold(1u64, |a, &b| a.checked_mul(b))
        .and_then(|b| b.checked_add(header as u64))
        .filter(|&b| b <= isize::MAX as u64)
        .ok_or_else(|| format!("corrupt header: dimensions {dims:?} overflow"))?;
    // One byte past the promise is enough to tell that the data is too long.
    let data = maybe_gunzip(raw, expected.saturating_add(1))?;
    if data.len() as u64 != expected {
        let has = if data.len() as u64 > expected {
            "is longer".to_string()
        } else {
            format!("has {} bytes", data.len())
        };
        return Err(format!(
            "truncated or corrupt: the header promises dimensions {dims:?} ({expected} bytes) \
             but the data {has}"
        ));
    }
    let mut data = data.into_owned();
    data.drain(..header);
    Ok(Idx {
        dims: dims.iter().map(|&d| d as usize).collect(),
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn idx_bytes(dims: &[u32]) -> Vec<u8> {
        let mut v = vec![0, 0, 8, dims.len() as u8];
        for x in dims {
            v.extend(x.to_be_bytes());
        }
        let n: u32 = dims.iter().product();
        v.extend((0..n).map(|i| (i % 256) as u8));
        v
    }

    #[test]
    fn reads_images_and_labels() {
        let im = parse(&idx_bytes(&[3, 2, 2]), 3).unwrap();
        assert_eq!((im.count(), im.item_len()), (3, 4));
        assert_eq!(im.item(2), &[8, 9, 10, 11]);
        let lab = parse(&idx_bytes(&[5]), 1).unwrap();
        assert_eq!(lab.data, vec![0, 1, 2, 3, 4]);
        // A label file is not an image file.
        assert!(parse(&idx_bytes(&[5]), 3).unwrap_err().contains("magic"));
        assert!(is_idx(Path::new("a/labels-idx1-ubyte.gz"), 1));
        assert!(!is_idx(Path::new("a/labels-idx1-ubyte.gz"), 3));
    }

    #[test]
    fn wrong_lengths_are_refused() {
        let mut b = idx_bytes(&[3, 2, 2]);
        b.pop();
        assert!(parse(&b, 3).unwrap_err().contains("truncated"));
        let mut b = idx_bytes(&[3, 2, 2]);
        b.push(0);
        assert!(parse(&b, 3).unwrap_err().contains("longer"));
        let mut b = idx_bytes(&[1, 2, 2]);
        b[4..16].fill(0xff);
        assert!(parse(&b, 3).unwrap_err().contains("corrupt header"));
    }
}
