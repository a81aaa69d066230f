//! Samples addressed in blocks: the one way per-sample data (features and targets) enters a
//! backend, and the unit in which it is moved (ARCHITECTURE.md, "Samples in blocks").
//!
//! A backend never indexes a problem's feature matrix or target vector directly when it loads
//! them: it asks a [`SampleSource`] for a contiguous [`SampleBlocks`] range at a time, into a
//! buffer it reuses. Today every source is in memory ([`Problem`]); a source that reads blocks
//! from disk (an image too large for host memory) plugs in behind the same trait, and the host
//! memory of loading stays one block whatever `n` is.

use crate::error::{Error, Param, Result};
use crate::problem::{Features, Problem};
use std::ops::Range;

/// Host bytes of one block of per-sample data moved into or out of a backend (feature rows on
/// load, predictions on readback): loading holds this much whatever `n` is.
pub const BLOCK_BYTES: u64 = 16 << 20;

/// The samples `0..n` cut into consecutive blocks of `len` (the last one may be shorter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SampleBlocks {
    n: usize,
    len: usize,
}

impl SampleBlocks {
    /// Blocks of `len` samples (at least 1).
    pub fn new(n: usize, len: usize) -> Self {
        SampleBlocks { n, len: len.max(1) }
    }

    /// The longest blocks whose `d` features per sample take at most `bytes` (f32), rounded down
    /// to a multiple of `align` samples (a kernel's sample block) but never below `align`.
    pub fn within(n: usize, d: usize, bytes: u64, align: usize) -> Self {
        let align = align.max(1);
        let per = (bytes / (4 * d.max(1) as u64)).max(1) as usize;
        let len = (per / align).max(1) * align;
        SampleBlocks::new(n, len.min(n.max(1).next_multiple_of(align)))
    }

    pub fn samples(&self) -> usize {
        self.n
    }

    /// Samples per block (the last block may hold fewer).
    pub fn block_len(&self) -> usize {
        self.len
    }

    pub fn count(&self) -> usize {
        self.n.div_ceil(self.len)
    }

    /// The samples of block `b`.
    pub fn range(&self, b: usize) -> Range<usize> {
        let lo = (b * self.len).min(self.n);
        lo..(lo + self.len).min(self.n)
    }

    pub fn iter(&self) -> impl Iterator<Item = Range<usize>> + '_ {
        (0..self.count()).map(|b| self.range(b))
    }
}

/// Per-sample data read a block at a time. Reads are fallible so that a source backed by a
/// file can report an I/O error; in-memory sources never fail.
pub trait SampleSource: Sync {
    /// `n`, the number of samples.
    fn samples(&self) -> usize;
    /// `d`, the features per sample.
    fn features(&self) -> usize;
    /// The features of samples `range`, row-major, into `out` (`range.len() · d` floats).
    fn read_rows(&self, range: Range<usize>, out: &mut [f32]) -> Result<()>;
    /// Target values per sample (1 for a scalar fit, `C` for vector outputs).
    fn targets_per_sample(&self) -> usize {
        1
    }
    /// The targets of samples `range`, row-major, into `out` (`range.len() · targets_per_sample`
    /// floats).
    fn read_targets(&self, range: Range<usize>, out: &mut [f32]) -> Result<()>;
}

/// The features of samples `range` of an in-memory [`Features`], row-major (the one
/// implementation behind every in-memory source).
pub fn read_feature_rows(features: &Features, d: usize, range: Range<usize>, out: &mut [f32]) {
    match features {
        Features::Dense(x) => out.copy_from_slice(&x[range.start * d..range.end * d]),
        Features::Grid(g) => {
            use rayon::prelude::*;
            let lo = range.start;
            out.par_chunks_mut(d.max(1))
                .enumerate()
                .for_each(|(t, row)| g.fill_row(lo + t, row));
        }
    }
}

/// A range outside the source, or an output of the wrong length: a caller's bug, reported
/// rather than a panic in the middle of an upload.
pub fn check_read(
    src: &dyn SampleSource,
    range: &Range<usize>,
    got: usize,
    per: usize,
) -> Result<()> {
    if range.start > range.end || range.end > src.samples() || got != range.len() * per {
        return Err(Error::invalid(
            Param::Samples,
            format!(
                "block read of samples {}..{} ({} floats) outside a source of {} samples",
                range.start,
                range.end,
                got,
                src.samples()
            ),
        ));
    }
    Ok(())
}

impl SampleSource for Problem {
    fn samples(&self) -> usize {
        self.n
    }

    fn features(&self) -> usize {
        self.d
    }

    fn read_rows(&self, range: Range<usize>, out: &mut [f32]) -> Result<()> {
        check_read(self, &range, out.len(), self.d)?;
        read_feature_rows(&self.features, self.d, range, out);
        Ok(())
    }

    fn read_targets(&self, range: Range<usize>, out: &mut [f32]) -> Result<()> {
        check_read(self, &range, out.len(), 1)?;
        out.copy_from_slice(&self.y[range]);
        Ok(())
    }
}

/// Calls `f(range, rows)` for every block of `blocks` in order, the rows read from `src` into
/// one buffer of a block's size that is reused.
pub fn for_each_rows(
    src: &dyn SampleSource,
    blocks: SampleBlocks,
    mut f: impl FnMut(Range<usize>, &[f32]) -> Result<()>,
) -> Result<()> {
    let d = src.features();
    let mut rows = Vec::with_capacity(blocks.block_len().min(blocks.samples()) * d);
    for range in blocks.iter() {
        rows.resize(range.len() * d, 0.0);
        src.read_rows(range.clone(), &mut rows)?;
        f(range, &rows)?;
    }
    Ok(())
}

/// Calls `f(range, targets)` for every block, like [`for_each_rows`].
pub fn for_each_targets(
    src: &dyn SampleSource,
    blocks: SampleBlocks,
    mut f: impl FnMut(Range<usize>, &[f32]) -> Result<()>,
) -> Result<()> {
    let t = src.targets_per_sample();
    let mut y = Vec::with_capacity(blocks.block_len().min(blocks.samples()) * t);
    for range in blocks.iter() {
        y.resize(range.len() * t, 0.0);
        src.read_targets(range.clone(), &mut y)?;
        f(range, &y)?;
    }
    Ok(())
}

/// Scatters a block of row-major rows (samples `range`, `d` features each) into feature-major
/// columns of `n` samples each: `cols` holds the columns of features `first..`, as many as it
/// has room for.
pub fn scatter_columns(
    cols: &mut [f32],
    n: usize,
    first: usize,
    range: Range<usize>,
    rows: &[f32],
    d: usize,
) {
    use rayon::prelude::*;
    debug_assert_eq!(rows.len(), range.len() * d);
    cols.par_chunks_mut(n.max(1))
        .enumerate()
        .for_each(|(k, col)| {
            for (t, v) in col[range.clone()].iter_mut().enumerate() {
                *v = rows[t * d + first + k];
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::problem::{AxisCoords, FourierSpec, GateMode};

    fn grid_problem(rows: usize, cols: usize) -> Problem {
        let spec = FourierSpec {
            d: 6,
            seed: 3,
            sigma: vec![2.0, 2.0],
            coords: vec![AxisCoords::Unit, AxisCoords::Unit],
            constant_feature: true,
            given: Vec::new(),
        };
        let g = spec.grid(&[rows, cols]).unwrap();
        let n = rows * cols;
        let y = (0..n).map(|i| i as f32 / n as f32).collect();
        Problem::new(6, 2, Features::Grid(g), y, GateMode::Sequential, 0).unwrap()
    }

    #[test]
    fn blocks_cover_every_sample_once_in_order() {
        for (n, len) in [(0, 4), (1, 4), (7, 3), (9, 3), (10, 64), (100, 1)] {
            let b = SampleBlocks::new(n, len);
            let all: Vec<usize> = b.iter().flatten().collect();
            assert_eq!(all, (0..n).collect::<Vec<_>>(), "n={n} len={len}");
            assert_eq!(b.count(), n.div_ceil(len));
        }
    }

    #[test]
    fn budgeted_blocks_respect_bytes_and_alignment() {
        let b = SampleBlocks::within(1000, 10, 40 * 100, 32);
        assert_eq!(b.block_len(), 96);
        // Never below one aligned block, never longer than n rounded up.
        assert_eq!(SampleBlocks::within(1000, 10, 4, 32).block_len(), 32);
        assert_eq!(SampleBlocks::within(50, 10, 1 << 30, 32).block_len(), 64);
    }

    #[test]
    fn block_reads_equal_row_reads_for_every_block_size() {
        let p = grid_problem(7, 9);
        let mut want = vec![0f32; p.n * p.d];
        for i in 0..p.n {
            p.fill_row(i, &mut want[i * p.d..(i + 1) * p.d]);
        }
        for len in [1, 5, 32, 63, 64] {
            let mut got = vec![f32::NAN; p.n * p.d];
            for_each_rows(&p, SampleBlocks::new(p.n, len), |r, rows| {
                got[r.start * p.d..r.end * p.d].copy_from_slice(rows);
                Ok(())
            })
            .unwrap();
            assert_eq!(got, want, "block length {len}");
            let mut y = vec![f32::NAN; p.n];
            for_each_targets(&p, SampleBlocks::new(p.n, len), |r, t| {
                y[r].copy_from_slice(t);
                Ok(())
            })
            .unwrap();
            assert_eq!(y, p.y);
        }
    }

    #[test]
    fn scattered_blocks_are_the_transpose() {
        let p = grid_problem(5, 11);
        let (n, d) = (p.n, p.d);
        let mut cols = vec![f32::NAN; n * d];
        for_each_rows(&p, SampleBlocks::new(n, 13), |r, rows| {
            scatter_columns(&mut cols[..3 * n], n, 0, r.clone(), rows, d);
            scatter_columns(&mut cols[3 * n..], n, 3, r, rows, d);
            Ok(())
        })
        .unwrap();
        let mut row = vec![0f32; d];
        for i in 0..n {
            p.fill_row(i, &mut row);
            for k in 0..d {
                assert_eq!(cols[k * n + i], row[k]);
            }
        }
    }

    #[test]
    fn reads_outside_the_source_are_errors() {
        let p = grid_problem(3, 3);
        let mut out = vec![0f32; 6 * 2];
        assert!(p.read_rows(8..10, &mut out).is_err());
        assert!(p.read_rows(0..2, &mut out[..5]).is_err());
        assert!(p.read_targets(0..10, &mut [0f32; 10]).is_err());
    }
}
