//! CIFAR-10 binary batches: records of one label byte and 3072 pixel bytes (32×32 red, then
//! green, then blue), 10 000 records per batch file.

use super::{Dataset, Split};
use crate::error::{Error, Result};
use std::path::Path;

/// Pixel bytes per record.
pub const PIXELS: usize = 32 * 32 * 3;
const RECORD: usize = 1 + PIXELS;

/// Reads one batch file.
pub fn read_batch(path: &Path) -> Result<Dataset> {
    let raw = std::fs::read(path).map_err(|e| Error::Data {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })?;
    parse(&raw, &path.display().to_string()).map_err(|msg| Error::Data {
        path: path.to_path_buf(),
        msg,
    })
}

/// Parses a batch held in memory.
pub fn parse(raw: &[u8], source: &str) -> std::result::Result<Dataset, String> {
    if raw.is_empty() || raw.len() % RECORD != 0 {
        return Err(format!(
            "{} bytes is not a whole number of CIFAR-10 records ({RECORD} bytes each): \
             truncated, or not a CIFAR-10 binary batch",
            raw.len()
        ));
    }
    let n = raw.len() / RECORD;
    let mut x = Vec::with_capacity(n * PIXELS);
    let mut labels = Vec::with_capacity(n);
    for rec in raw.chunks_exact(RECORD) {
        if rec[0] > 9 {
            return Err(format!(
                "label {} is not a CIFAR-10 class (0–9): not a CIFAR-10 batch",
                rec[0]
            ));
        }
        labels.push(rec[0]);
        x.extend_from_slice(&rec[1..]);
    }
    Ok(Dataset {
        x,
        labels,
        d: PIXELS,
        classes: 10,
        source: source.to_string(),
    })
}

/// A CIFAR-10 binary folder: `data_batch_1.bin` … `data_batch_5.bin` train, `test_batch.bin`
/// tests.
pub fn read_dir(dir: &Path) -> Result<Split> {
    let mut train: Option<Dataset> = None;
    for k in 1..=5 {
        let p = dir.join(format!("data_batch_{k}.bin"));
        if !p.is_file() {
            continue;
        }
        let b = read_batch(&p)?;
        match &mut train {
            None => train = Some(b),
            Some(t) => {
                t.x.extend(b.x);
                t.labels.extend(b.labels);
            }
        }
    }
    let train = train.ok_or_else(|| Error::Data {
        path: dir.to_path_buf(),
        msg: "no data_batch_*.bin training batches beside test_batch.bin".into(),
    })?;
    Ok(Split {
        train,
        test: read_batch(&dir.join("test_batch.bin"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_records_and_refuses_bad_ones() {
        let mut raw = vec![3u8];
        raw.extend(vec![7u8; PIXELS]);
        raw.push(9);
        raw.extend(vec![1u8; PIXELS]);
        let ds = parse(&raw, "t").unwrap();
        assert_eq!(ds.labels, vec![3, 9]);
        assert_eq!(ds.row(1)[0], 1);
        assert!(parse(&raw[..raw.len() - 1], "t")
            .unwrap_err()
            .contains("truncated"));
        raw[0] = 200;
        assert!(parse(&raw, "t")
            .unwrap_err()
            .contains("not a CIFAR-10 class"));
    }
}
