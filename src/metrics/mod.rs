//! Quality measures: PSNR, SSIM, the DCT yardstick, and the matching of fitted neurons to
//! planted ones.

use crate::sparse::SparseVec;
use std::collections::HashMap;

/// `20·log10(peak) − 10·log10(MSE)`; infinite for an exact fit.
pub fn psnr_from_mse(mse: f64, peak: f64) -> f64 {
    if mse <= 0.0 {
        return f64::INFINITY;
    }
    20.0 * peak.log10() - 10.0 * mse.log10()
}

pub fn mse(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum::<f64>()
        / a.len().max(1) as f64
}

/// Dynamic range of a signal, the PSNR peak for non-image targets.
pub fn range(y: &[f32]) -> f64 {
    let (lo, hi) = y
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
            (l.min(v), h.max(v))
        });
    (hi - lo).max(f32::MIN_POSITIVE) as f64
}

/// Mean SSIM (Wang et al. 2004) over 8×8 windows with stride 4, per channel, data range 1
/// (smaller windows on an image under 8 pixels on a side). `img` is row-major `h×w×c`.
/// `None` when a side has fewer than 2 pixels: a window's variances need two rows and two
/// columns.
pub fn ssim(a: &[f32], b: &[f32], h: usize, w: usize, c: usize) -> Option<f64> {
    let (c1, c2) = (0.01f64.powi(2), 0.03f64.powi(2));
    let win = 8.min(h).min(w);
    if win < 2 || c == 0 {
        return None;
    }
    let stride = 4.min(win).max(1);
    let mut total = 0.0;
    let mut count = 0usize;
    for ch in 0..c {
        let mut r = 0;
        while r + win <= h {
            let mut col = 0;
            while col + win <= w {
                let (mut ma, mut mb, mut va, mut vb, mut cov) = (0.0, 0.0, 0.0, 0.0, 0.0);
                for i in r..r + win {
                    for j in col..col + win {
                        let idx = (i * w + j) * c + ch;
                        ma += a[idx] as f64;
                        mb += b[idx] as f64;
                    }
                }
                let npx = (win * win) as f64;
                ma /= npx;
                mb /= npx;
                for i in r..r + win {
                    for j in col..col + win {
                        let idx = (i * w + j) * c + ch;
                        let (da, db) = (a[idx] as f64 - ma, b[idx] as f64 - mb);
                        va += da * da;
                        vb += db * db;
                        cov += da * db;
                    }
                }
                va /= npx - 1.0;
                vb /= npx - 1.0;
                cov /= npx - 1.0;
                total += ((2.0 * ma * mb + c1) * (2.0 * cov + c2))
                    / ((ma * ma + mb * mb + c1) * (va + vb + c2));
                count += 1;
                col += stride;
            }
            r += stride;
        }
    }
    Some(total / count as f64)
}

/// Minimum-cost assignment of rows to columns of a square cost matrix (Hungarian algorithm,
/// O(m³)). Returns `assign[row] = column`.
pub fn hungarian(cost: &[f64], m: usize) -> Vec<usize> {
    let inf = f64::INFINITY;
    let mut u = vec![0.0; m + 1];
    let mut v = vec![0.0; m + 1];
    let mut p = vec![0usize; m + 1];
    let mut way = vec![0usize; m + 1];
    for i in 1..=m {
        p[0] = i;
        let mut j0 = 0;
        let mut minv = vec![inf; m + 1];
        let mut used = vec![false; m + 1];
        loop {
            used[j0] = true;
            let i0 = p[j0];
            let mut delta = inf;
            let mut j1 = 0;
            for j in 1..=m {
                if !used[j] {
                    let cur = cost[(i0 - 1) * m + (j - 1)] - u[i0] - v[j];
                    if cur < minv[j] {
                        minv[j] = cur;
                        way[j] = j0;
                    }
                    if minv[j] < delta {
                        delta = minv[j];
                        j1 = j;
                    }
                }
            }
            for j in 0..=m {
                if used[j] {
                    u[p[j]] += delta;
                    v[j] -= delta;
                } else {
                    minv[j] -= delta;
                }
            }
            j0 = j1;
            if p[j0] == 0 {
                break;
            }
        }
        loop {
            let j1 = way[j0];
            p[j0] = p[j1];
            j0 = j1;
            if j0 == 0 {
                break;
            }
        }
    }
    let mut assign = vec![0; m];
    for j in 1..=m {
        if p[j] > 0 {
            assign[p[j] - 1] = j - 1;
        }
    }
    assign
}

/// Relabels the neurons of `fitted` to best match `planted` (min Σ‖ŵ_π(j) − w*_j‖²), since a
/// ReLU network is invariant to permuting its neurons.
pub fn match_neurons(fitted: &SparseVec, planted: &SparseVec, m: usize, d: usize) -> SparseVec {
    let block_norms = |v: &SparseVec| {
        let mut n = vec![0.0f64; m];
        for (&i, &x) in v.indices.iter().zip(&v.values) {
            n[i as usize / d] += (x as f64).powi(2);
        }
        n
    };
    let (nf, np) = (block_norms(fitted), block_norms(planted));
    let mut cost = vec![0.0f64; m * m];
    for p in 0..m {
        for f in 0..m {
            cost[p * m + f] = nf[f] + np[p];
        }
    }
    let mut by_feature: HashMap<usize, Vec<(usize, f64)>> = HashMap::new();
    for (&i, &x) in fitted.indices.iter().zip(&fitted.values) {
        by_feature
            .entry(i as usize % d)
            .or_default()
            .push((i as usize / d, x as f64));
    }
    for (&i, &x) in planted.indices.iter().zip(&planted.values) {
        if let Some(list) = by_feature.get(&(i as usize % d)) {
            let p = i as usize / d;
            for &(f, y) in list {
                cost[p * m + f] -= 2.0 * x as f64 * y;
            }
        }
    }
    // assign[planted neuron] = fitted neuron
    let assign = hungarian(&cost, m);
    let mut inverse = vec![0usize; m];
    for (p, &f) in assign.iter().enumerate() {
        inverse[f] = p;
    }
    SparseVec::from_pairs(
        fitted
            .indices
            .iter()
            .zip(&fitted.values)
            .map(|(&i, &x)| {
                let (f, k) = (i as usize / d, i as usize % d);
                ((inverse[f] * d + k) as u32, x)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hungarian_finds_the_optimum() {
        let cost = [4.0, 1.0, 3.0, 2.0, 0.0, 5.0, 3.0, 2.0, 2.0];
        let a = hungarian(&cost, 3);
        let total: f64 = a.iter().enumerate().map(|(i, &j)| cost[i * 3 + j]).sum();
        assert_eq!(total, 5.0);
    }

    #[test]
    fn matching_undoes_a_permutation() {
        let planted = SparseVec::from_pairs(vec![(0, 1.0), (1, -2.0), (5, 3.0), (10, 0.5)]);
        // neuron 0 -> 2, 1 -> 0, 2 -> 1 (d = 4)
        let fitted = SparseVec::from_pairs(vec![(8, 1.0), (9, -2.0), (1, 3.0), (6, 0.5)]);
        let m = match_neurons(&fitted, &planted, 3, 4);
        assert_eq!(m, planted);
    }

    #[test]
    fn ssim_of_identical_images_is_one() {
        let a: Vec<f32> = (0..256).map(|i| (i % 17) as f32 / 17.0).collect();
        assert!((ssim(&a, &a, 16, 16, 1).unwrap() - 1.0).abs() < 1e-9);
        let b: Vec<f32> = a.iter().map(|x| 1.0 - x).collect();
        assert!(ssim(&a, &b, 16, 16, 1).unwrap() < 0.5);
    }

    #[test]
    fn ssim_needs_two_pixels_on_each_side() {
        let a: Vec<f32> = (0..300).map(|i| (i % 7) as f32 / 7.0).collect();
        assert_eq!(ssim(&a, &a, 1, 300, 1), None);
        assert_eq!(ssim(&a, &a, 300, 1, 1), None);
        let s = ssim(&a[..6], &a[..6], 2, 3, 1).unwrap();
        assert!(s.is_finite() && (s - 1.0).abs() < 1e-9, "{s}");
    }
}
