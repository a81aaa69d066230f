//! The compact weight store: `s` (flat index, value) pairs of `w ∈ R^{m·d}`, and the streaming
//! top-`s` selection that builds it tile by tile without ever holding `m·d` values.

use std::cmp::Ordering;

/// A sparse vector: indices strictly increasing, one value per index.
/// Flat index `p = j·d + k` is feature `k` of neuron `j`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SparseVec {
    pub indices: Vec<u32>,
    pub values: Vec<f32>,
}

impl SparseVec {
    pub fn new() -> Self {
        Self::default()
    }

    /// Momentum on the support: `w + β·(w − prev)` at every index of `w` (an index `prev`
    /// lacks counts as 0 there, so a weight new to the support is scaled by `1 + β`). Keeps
    /// `w`'s support, so the update still starts from `s` nonzeros.
    pub fn extrapolate(&self, prev: &SparseVec, beta: f32) -> SparseVec {
        let mut y = self.clone();
        let mut j = 0;
        for (&k, v) in y.indices.iter().zip(y.values.iter_mut()) {
            while j < prev.indices.len() && prev.indices[j] < k {
                j += 1;
            }
            let p = match prev.indices.get(j) {
                Some(&i) if i == k => prev.values[j],
                _ => 0.0,
            };
            *v += beta * (*v - p);
        }
        y
    }

    /// `self + beta · other` for a vector on the same support (`None` where the supports
    /// differ): the update of a refinement step and of its momentum.
    pub fn plus_scaled(&self, other: &SparseVec, beta: f32) -> Option<SparseVec> {
        (self.indices == other.indices).then(|| SparseVec {
            indices: self.indices.clone(),
            values: self
                .values
                .iter()
                .zip(&other.values)
                .map(|(&x, &y)| x + beta * y)
                .collect(),
        })
    }

    pub fn with_capacity(s: usize) -> Self {
        Self {
            indices: Vec::with_capacity(s),
            values: Vec::with_capacity(s),
        }
    }

    /// Builds from pairs in any order; panics on duplicate indices (a programming error).
    pub fn from_pairs(mut pairs: Vec<(u32, f32)>) -> Self {
        pairs.sort_unstable_by_key(|p| p.0);
        assert!(
            pairs.windows(2).all(|w| w[0].0 < w[1].0),
            "duplicate index in sparse vector"
        );
        let (indices, values) = pairs.into_iter().unzip();
        Self { indices, values }
    }

    /// The `s` entries of largest magnitude (ties to the lower index), sorted by index.
    pub fn largest(&self, s: usize) -> SparseVec {
        if self.len() <= s {
            return self.clone();
        }
        let mut top = TopS::new(s);
        top.extend(
            self.indices
                .iter()
                .copied()
                .zip(self.values.iter().copied()),
        );
        top.finish()
    }

    pub fn len(&self) -> usize {
        self.indices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    pub fn clear(&mut self) {
        self.indices.clear();
        self.values.clear();
    }

    pub fn norm2(&self) -> f64 {
        self.values.iter().map(|&v| (v as f64) * (v as f64)).sum()
    }

    /// The dense vector of length `len` (for tests and small problems only).
    pub fn to_dense(&self, len: usize) -> Vec<f32> {
        let mut out = vec![0.0; len];
        for (&i, &v) in self.indices.iter().zip(&self.values) {
            out[i as usize] = v;
        }
        out
    }

    /// Ranges of entries per neuron: `(neuron, start..end)` for every neuron with entries.
    pub fn neuron_runs(&self, d: usize) -> Vec<(u32, std::ops::Range<usize>)> {
        let mut runs = Vec::new();
        let mut start = 0;
        while start < self.indices.len() {
            let j = self.indices[start] / d as u32;
            let mut end = start + 1;
            while end < self.indices.len() && self.indices[end] / d as u32 == j {
                end += 1;
            }
            runs.push((j, start..end));
            start = end;
        }
        runs
    }

    /// Number of neurons with at least one entry.
    pub fn active_neurons(&self, d: usize) -> usize {
        self.neuron_runs(d).len()
    }

    /// `‖self − other‖²` over the union of supports.
    pub fn dist2(&self, other: &SparseVec) -> f64 {
        let (mut a, mut b, mut acc) = (0, 0, 0.0f64);
        while a < self.len() || b < other.len() {
            let ia = self.indices.get(a).copied().unwrap_or(u32::MAX);
            let ib = other.indices.get(b).copied().unwrap_or(u32::MAX);
            let diff = match ia.cmp(&ib) {
                Ordering::Less => {
                    a += 1;
                    self.values[a - 1] as f64
                }
                Ordering::Greater => {
                    b += 1;
                    other.values[b - 1] as f64
                }
                Ordering::Equal => {
                    a += 1;
                    b += 1;
                    self.values[a - 1] as f64 - other.values[b - 1] as f64
                }
            };
            acc += diff * diff;
        }
        acc
    }

    /// Entries whose index is in one support and not the other.
    pub fn support_difference(&self, other: &SparseVec) -> usize {
        let (mut a, mut b, mut n) = (0, 0, 0);
        while a < self.len() && b < other.len() {
            match self.indices[a].cmp(&other.indices[b]) {
                Ordering::Less => {
                    n += 1;
                    a += 1
                }
                Ordering::Greater => {
                    n += 1;
                    b += 1
                }
                Ordering::Equal => {
                    a += 1;
                    b += 1
                }
            }
        }
        n + (self.len() - a) + (other.len() - b)
    }
}

/// The selection order: larger magnitude first, ties to the lower flat index (ARCHITECTURE.md, "The IHT step").
#[inline]
pub fn rank(a: &(u32, f32), b: &(u32, f32)) -> Ordering {
    b.1.abs()
        .partial_cmp(&a.1.abs())
        .unwrap_or(Ordering::Equal)
        .then(a.0.cmp(&b.0))
}

/// Streaming top-`s`: a running buffer of at most `s` entries merged with each tile of
/// candidates. Memory `O(s + tile)`; the result does not depend on how the candidates are tiled.
#[derive(Debug)]
pub struct TopS {
    s: usize,
    buf: Vec<(u32, f32)>,
    /// The `s`-th largest magnitude kept at the last prune: a candidate strictly below it can
    /// never enter (ties still go in, for the lower index to win). Most candidates of a dense
    /// pass stop here, so pruning (a select over `2s`) runs far less often.
    floor: f32,
}

impl TopS {
    pub fn new(s: usize) -> Self {
        Self {
            s,
            buf: Vec::with_capacity(2 * s),
            floor: 0.0,
        }
    }

    /// Adds one candidate; the buffer is pruned back to `s` whenever it doubles.
    #[inline]
    pub fn push(&mut self, index: u32, value: f32) {
        if value.abs() < self.floor {
            return;
        }
        self.buf.push((index, value));
        if self.buf.len() >= 2 * self.s.max(1) {
            self.prune();
        }
    }

    /// Merges a tile of candidates.
    pub fn extend(&mut self, tile: impl IntoIterator<Item = (u32, f32)>) {
        for (i, v) in tile {
            self.push(i, v);
        }
    }

    fn prune(&mut self) {
        if self.buf.len() > self.s {
            if self.s == 0 {
                self.buf.clear();
                return;
            }
            self.buf.select_nth_unstable_by(self.s - 1, rank);
            self.buf.truncate(self.s);
            let last = self.buf[self.s - 1].1.abs();
            if !last.is_nan() {
                self.floor = last;
            }
        }
    }

    /// The `s` largest magnitudes, sorted by index.
    pub fn finish(mut self) -> SparseVec {
        self.prune();
        self.buf.sort_unstable_by_key(|p| p.0);
        let (indices, values) = self.buf.into_iter().unzip();
        SparseVec { indices, values }
    }

    /// Bytes this selector holds at most.
    pub fn capacity_bytes(s: usize) -> usize {
        2 * s.max(1) * std::mem::size_of::<(u32, f32)>()
    }
}

/// Reference top-`s` by a full sort (for tests).
pub fn top_s_by_sort(values: &[f32], s: usize) -> SparseVec {
    let mut all: Vec<(u32, f32)> = values
        .iter()
        .enumerate()
        .map(|(i, &v)| (i as u32, v))
        .collect();
    all.sort_by(rank);
    all.truncate(s);
    SparseVec::from_pairs(all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn momentum_extrapolates_on_the_current_support_only() {
        let w = SparseVec::from_pairs(vec![(1, 2.0), (4, -1.0), (9, 0.5)]);
        let prev = SparseVec::from_pairs(vec![(0, 7.0), (4, -3.0), (9, 0.5), (12, 1.0)]);
        let y = w.extrapolate(&prev, 0.5);
        // 1 is new (×1.5), 4 moved from −3 to −1 (on by half of +2), 9 did not move; 0 and 12
        // left the support and stay out.
        assert_eq!(y.indices, vec![1, 4, 9]);
        assert_eq!(y.values, vec![3.0, 0.0, 0.5]);
        assert_eq!(w.extrapolate(&prev, 0.0), w);
        assert_eq!(
            w.extrapolate(&SparseVec::new(), 0.25).values,
            vec![2.5, -1.25, 0.625]
        );
    }

    #[test]
    fn streaming_equals_sort_with_ties_and_edges() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for &(len, s, tile) in &[
            (1usize, 1usize, 1usize),
            (10, 1, 3),
            (10, 10, 3),
            (257, 31, 64),
            (1000, 999, 77),
            (1000, 1000, 1000),
            (4096, 100, 129),
        ] {
            // Few distinct magnitudes force many ties; both signs must rank by |c|.
            let vals: Vec<f32> = (0..len)
                .map(|_| {
                    let m = rng.random_range(0..7) as f32 * 0.5;
                    if rng.random::<bool>() {
                        m
                    } else {
                        -m
                    }
                })
                .collect();
            let mut t = TopS::new(s);
            for (c, chunk) in vals.chunks(tile).enumerate() {
                t.extend(
                    chunk
                        .iter()
                        .enumerate()
                        .map(|(i, &v)| ((c * tile + i) as u32, v)),
                );
            }
            assert_eq!(t.finish(), top_s_by_sort(&vals, s), "len {len} s {s}");
        }
    }

    #[test]
    fn distances_and_support_difference() {
        let a = SparseVec::from_pairs(vec![(1, 1.0), (5, 2.0)]);
        let b = SparseVec::from_pairs(vec![(5, 1.0), (7, 3.0)]);
        assert_eq!(a.dist2(&b), 1.0 + 1.0 + 9.0);
        assert_eq!(a.support_difference(&b), 2);
        assert_eq!(a.neuron_runs(4), vec![(0, 0..1), (1, 1..2)]);
    }
}
