//! Labelled datasets for classification: MNIST-style IDX pairs and CIFAR-10 binary batches.
//!
//! A [`Dataset`] keeps the raw byte values of every sample (`0..=255`), sample-major, and its
//! labels; scaling is the classifier's choice (the paper feeds raw pixel values).

pub mod cifar;
pub mod idx;

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// Samples with `d` byte-valued features each and a label in `0..classes`.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// Sample-major `n × d` feature values, 0–255.
    pub x: Vec<u8>,
    pub labels: Vec<u8>,
    pub d: usize,
    pub classes: usize,
    /// Where it came from, for messages and reports.
    pub source: String,
}

impl Dataset {
    pub fn n(&self) -> usize {
        self.labels.len()
    }

    /// Sample `i`'s features.
    pub fn row(&self, i: usize) -> &[u8] {
        &self.x[i * self.d..(i + 1) * self.d]
    }

    /// The samples at `idx`, in that order.
    pub fn subset(&self, idx: &[usize]) -> Dataset {
        let mut x = Vec::with_capacity(idx.len() * self.d);
        for &i in idx {
            x.extend_from_slice(self.row(i));
        }
        Dataset {
            x,
            labels: idx.iter().map(|&i| self.labels[i]).collect(),
            d: self.d,
            classes: self.classes,
            source: self.source.clone(),
        }
    }

    /// The samples whose label is in `keep`, relabelled by their position in `keep`.
    pub fn select_classes(&self, keep: &[u8]) -> Dataset {
        let idx: Vec<usize> = (0..self.n())
            .filter(|&i| keep.contains(&self.labels[i]))
            .collect();
        let mut out = self.subset(&idx);
        for l in &mut out.labels {
            *l = keep.iter().position(|k| k == l).expect("kept label") as u8;
        }
        out.classes = keep.len();
        out
    }
}

/// A training and a test set.
#[derive(Clone, Debug)]
pub struct Split {
    pub train: Dataset,
    pub test: Dataset,
}

/// Share of a single IDX pair used for training: MNIST's own split is 60 000 / 10 000; the 10 000
/// digits in `assets/mnist` split 8 000 / 2 000.
pub const TRAIN_FRACTION: f64 = 0.8;

/// Loads a dataset for classification from `path`:
/// - an IDX image file (`…images-idx3-ubyte[.gz]`, its labels beside it with `idx1` and
///   `labels` in the name) or a folder holding one such pair: the first 80% train, the rest
///   test;
/// - a folder with MNIST's four standard files (`train-images-idx3-ubyte[.gz]`, …): its split;
/// - a CIFAR-10 binary folder (`data_batch_*.bin`, `test_batch.bin`) or one `.bin` batch (80/20).
pub fn load(path: &Path) -> Result<Split> {
    let meta = std::fs::metadata(path).map_err(|e| Error::Data {
        path: path.to_path_buf(),
        msg: format!(
            "{e} (give an IDX image file, a folder with an IDX pair, or a CIFAR-10 folder)"
        ),
    })?;
    if meta.is_dir() {
        return load_dir(path);
    }
    if idx::is_idx(path, 3) {
        let labels = labels_beside(path)?;
        return Ok(split(idx_pair(path, &labels)?));
    }
    if path.extension().is_some_and(|e| e == "bin") {
        return Ok(split(cifar::read_batch(path)?));
    }
    Err(Error::Data {
        path: path.to_path_buf(),
        msg: "not an IDX image file (…idx3-ubyte[.gz]) or a CIFAR-10 batch (.bin)".into(),
    })
}

fn load_dir(dir: &Path) -> Result<Split> {
    let find = |names: &[&str]| -> Option<PathBuf> {
        names
            .iter()
            .flat_map(|n| [dir.join(n), dir.join(format!("{n}.gz"))])
            .find(|p| p.is_file())
    };
    if let (Some(tri), Some(trl), Some(tei), Some(tel)) = (
        find(&["train-images-idx3-ubyte", "train-images.idx3-ubyte"]),
        find(&["train-labels-idx1-ubyte", "train-labels.idx1-ubyte"]),
        find(&["t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"]),
        find(&["t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"]),
    ) {
        return Ok(Split {
            train: idx_pair(&tri, &trl)?,
            test: idx_pair(&tei, &tel)?,
        });
    }
    if let (Some(im), Some(lab)) = (find(&["images-idx3-ubyte"]), find(&["labels-idx1-ubyte"])) {
        return Ok(split(idx_pair(&im, &lab)?));
    }
    if dir.join("test_batch.bin").is_file() {
        return cifar::read_dir(dir);
    }
    Err(Error::Data {
        path: dir.to_path_buf(),
        msg: "no dataset here: expected images-idx3-ubyte[.gz] with labels-idx1-ubyte[.gz], \
              MNIST's train-/t10k- files, or CIFAR-10's data_batch_*.bin and test_batch.bin"
            .into(),
    })
}

/// The labels file beside an IDX image file: `images` → `labels`, `idx3` → `idx1`.
fn labels_beside(images: &Path) -> Result<PathBuf> {
    let name = images
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let guess = name.replace("images", "labels").replace("idx3", "idx1");
    let p = images.with_file_name(&guess);
    if guess != name && p.is_file() {
        return Ok(p);
    }
    Err(Error::Data {
        path: images.to_path_buf(),
        msg: format!("no labels file beside it (looked for {guess})"),
    })
}

/// Reads an IDX image file and its labels, checking that they belong together.
pub fn idx_pair(images: &Path, labels: &Path) -> Result<Dataset> {
    let im = idx::read(images, 3)?;
    let lab = idx::read(labels, 1)?;
    if im.count() != lab.count() {
        return Err(Error::Data {
            path: labels.to_path_buf(),
            msg: format!(
                "{} labels for {} images in {}: the files do not belong together",
                lab.count(),
                im.count(),
                images.display()
            ),
        });
    }
    let classes = lab.data.iter().copied().max().map_or(0, |m| m as usize + 1);
    if classes > 256 || lab.count() == 0 {
        return Err(Error::Data {
            path: labels.to_path_buf(),
            msg: "no labels".into(),
        });
    }
    Ok(Dataset {
        d: im.item_len(),
        x: im.data,
        labels: lab.data,
        classes,
        source: images.display().to_string(),
    })
}

/// The first [`TRAIN_FRACTION`] of the samples train, the rest test.
pub fn split(all: Dataset) -> Split {
    let n = all.n();
    let cut = ((n as f64 * TRAIN_FRACTION).round() as usize).clamp(1.min(n), n);
    let idx: Vec<usize> = (0..n).collect();
    Split {
        train: all.subset(&idx[..cut]),
        test: all.subset(&idx[cut..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, n: u32, labels_n: u32) -> PathBuf {
        let mut im = vec![0, 0, 8, 3];
        for x in [n, 2, 2] {
            im.extend(x.to_be_bytes());
        }
        im.extend((0..n * 4).map(|i| (i % 256) as u8));
        let mut lab = vec![0, 0, 8, 1];
        lab.extend(labels_n.to_be_bytes());
        lab.extend((0..labels_n).map(|i| (i % 10) as u8));
        let p = dir.join("images-idx3-ubyte");
        std::fs::write(&p, im).unwrap();
        std::fs::write(dir.join("labels-idx1-ubyte"), lab).unwrap();
        p
    }

    #[test]
    fn reads_a_pair_and_splits_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = write_pair(dir.path(), 10, 10);
        for s in [load(&p).unwrap(), load(dir.path()).unwrap()] {
            assert_eq!((s.train.n(), s.test.n()), (8, 2));
            assert_eq!(s.train.d, 4);
            assert_eq!(s.test.labels, vec![8, 9]);
            assert_eq!(s.test.row(0), &[32, 33, 34, 35]);
        }
    }

    #[test]
    fn mismatched_counts_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = write_pair(dir.path(), 10, 9);
        let e = load(&p).unwrap_err().to_string();
        assert!(e.contains("9 labels for 10 images"), "{e}");
        assert!(e.contains("belong together"), "{e}");
    }

    #[test]
    fn select_classes_relabels() {
        let ds = Dataset {
            x: (0..6).collect(),
            labels: vec![3, 1, 3, 0, 1, 7],
            d: 1,
            classes: 10,
            source: String::new(),
        };
        let b = ds.select_classes(&[0, 1]);
        assert_eq!(b.labels, vec![1, 0, 1]);
        assert_eq!(b.x, vec![1, 3, 4]);
        assert_eq!(b.classes, 2);
    }
}
