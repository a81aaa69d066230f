//! DCT terms of a model: the largest orthonormal DCT-II coefficients of what the network leaves
//! of the image (ARCHITECTURE.md, "Images").
//!
//! A sum of ReLUs of Fourier features draws edges and smooth regions with few nonzeros, but
//! spends many on what a cosine basis holds in a few terms, and the reverse for the DCT. So a
//! spinr fit gives a share of its `s` nonzeros to DCT terms: after the network's epochs, the
//! `k` largest coefficients of the residual (image − the network's prediction, before
//! clamping) join the model. With an orthonormal basis those `k` are the best `k`-term
//! correction of that residual. A term is one number, as a weight is, so the model keeps `s`
//! nonzeros in all; its index (in [`super::dct`]'s sample order of the fitted grid) is implied
//! by the position, as a weight's flat index is. The polish after the epochs fits the network
//! and its terms together ([`TermsLeft`]): each round fits the network to the image less the
//! terms of its starting network's residual, so the weights stop spending on what the terms
//! hold; the model keeps the terms of the polished network's residual.
//!
//! A term is a continuous function of the unit coordinates, `α_a α_b cos(π a u) cos(π b v)` with
//! `u`, `v` the pixel centres in (0, 1) and `α` the fitted grid's orthonormal scales, so a model
//! with terms renders at any size as the network does, and at the fitted size it is exactly
//! the inverse DCT of the kept coefficients.

use crate::error::{check_finite, Error, Param, Result};
use crate::inr::Image;

/// The DCT terms of a model: `(index, value)` pairs, indices ascending, in the sample order
/// `(a·W + b)·C + ch` of the fitted `H × W × C` grid (`a` the vertical frequency).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DctTerms {
    pub indices: Vec<u32>,
    pub values: Vec<f32>,
}

/// The polish's targets for a model of `k` DCT terms ([`crate::iht::PolishTargets`]): the
/// image less the `k` terms of the network's residual, chosen again for each round's network,
/// so that the network and its terms are fitted together rather than one after the other.
pub struct TermsLeft<'a> {
    pub image: &'a Image,
    pub k: usize,
}

impl crate::iht::PolishTargets for TermsLeft<'_> {
    fn targets(&mut self, prediction: &[f32]) -> Result<Vec<f32>> {
        let mut terms = DctTerms::of_residual(self.image, prediction, self.k)?;
        terms.values.iter_mut().for_each(|v| *v = -*v);
        let mut y = self.image.data.clone();
        let (h, w, c) = (self.image.height, self.image.width, self.image.channels);
        terms.add_to((h, w), (h, w, c), &mut y);
        Ok(y)
    }
}

impl DctTerms {
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// The `k` largest DCT coefficients (ties to the lower index) of `target − prediction`,
    /// where `prediction` is the network's, unclamped, at the target's size.
    pub fn of_residual(target: &Image, prediction: &[f32], k: usize) -> Result<DctTerms> {
        if prediction.len() != target.data.len() {
            return Err(Error::invalid(
                Param::Size,
                format!(
                    "a prediction of {} samples for an image of {}",
                    prediction.len(),
                    target.data.len()
                ),
            ));
        }
        check_finite("the prediction", prediction)?;
        if k == 0 {
            return Ok(DctTerms::default());
        }
        let residual = Image {
            height: target.height,
            width: target.width,
            channels: target.channels,
            data: target
                .data
                .iter()
                .zip(prediction)
                .map(|(&y, &p)| y - p)
                .collect(),
        };
        let coeffs = super::dct::forward(&residual)?;
        let mut kept = super::dct::largest(&coeffs, k);
        kept.sort_unstable();
        Ok(DctTerms {
            values: kept.iter().map(|&i| coeffs[i] as f32).collect(),
            indices: kept.into_iter().map(|i| i as u32).collect(),
        })
    }

    /// Checks the terms against a fitted `height × width × channels` grid: indices ascending
    /// and inside it, values finite. The error says which.
    pub fn check(
        &self,
        height: usize,
        width: usize,
        channels: usize,
    ) -> std::result::Result<(), String> {
        if self.indices.len() != self.values.len() {
            return Err(format!(
                "{} DCT term indices but {} values",
                self.indices.len(),
                self.values.len()
            ));
        }
        let n = height as u64 * width as u64 * channels as u64;
        if let Some(i) = self.indices.iter().find(|&&i| i as u64 >= n) {
            return Err(format!(
                "DCT term index {i} is outside the {height}×{width}×{channels} grid"
            ));
        }
        if self.indices.windows(2).any(|p| p[0] >= p[1]) {
            return Err("DCT term indices are not strictly ascending".into());
        }
        if self.values.iter().any(|v| !v.is_finite()) {
            return Err("a DCT term value is not finite".into());
        }
        Ok(())
    }

    /// Adds the terms of a model fitted on a `fit_h × fit_w` grid to `out`, a prediction at
    /// `height × width` (`channels` per pixel, row-major), before it is clamped.
    pub fn add_to(
        &self,
        (fit_h, fit_w): (usize, usize),
        (height, width, channels): (usize, usize, usize),
        out: &mut [f32],
    ) {
        debug_assert_eq!(out.len(), height * width * channels);
        // Terms of one vertical frequency share their row factor (the indices put them side by
        // side): their column factors are summed into one image row first, so the cost is a
        // pass over the image per vertical frequency in use.
        let row_of = |i: u32| i as usize / channels / fit_w;
        let mut row = vec![0.0f64; width * channels];
        let mut at = 0;
        while at < self.len() {
            let a = row_of(self.indices[at]);
            row.iter_mut().for_each(|v| *v = 0.0);
            while at < self.len() && row_of(self.indices[at]) == a {
                let i = self.indices[at] as usize;
                let (b, ch) = ((i / channels) % fit_w, i % channels);
                let scale = self.values[at] as f64 * alpha(b, fit_w);
                for j in 0..width {
                    row[j * channels + ch] += scale * cosine(b, j, width);
                }
                at += 1;
            }
            let ra = alpha(a, fit_h);
            for (i, line) in out.chunks_exact_mut(width * channels).enumerate() {
                let f = ra * cosine(a, i, height);
                for (o, v) in line.iter_mut().zip(&row) {
                    *o += (f * v) as f32;
                }
            }
        }
    }
}

/// The orthonormal DCT scale of frequency `k` on `n` samples.
fn alpha(k: usize, n: usize) -> f64 {
    if k == 0 {
        (1.0 / n as f64).sqrt()
    } else {
        (2.0 / n as f64).sqrt()
    }
}

/// `cos(π k u)` at the centre `u = (i + ½) / n` of sample `i` of `n`.
fn cosine(k: usize, i: usize, n: usize) -> f64 {
    (std::f64::consts::PI * k as f64 * (i as f64 + 0.5) / n as f64).cos()
}

/// How many of `s` nonzeros a fit gives to DCT terms with `share` (rounded; at least one
/// nonzero stays with the network).
pub fn terms_of(s: usize, share: f64) -> usize {
    ((s as f64 * share).round() as usize).min(s.saturating_sub(1))
}

/// Checks a DCT share given by the user.
pub fn check_share(share: f64) -> Result<f64> {
    if !(0.0..1.0).contains(&share) {
        return Err(Error::invalid(
            Param::DctShare,
            format!(
                "{share} is outside [0, 1): it is the share of the nonzeros given to \
                 DCT terms, and the network keeps the rest"
            ),
        ));
    }
    Ok(share)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(h: usize, w: usize, c: usize) -> Image {
        Image {
            height: h,
            width: w,
            channels: c,
            data: (0..h * w * c)
                .map(|i| {
                    let (r, col, ch) = ((i / c) / w, (i / c) % w, i % c);
                    0.5 + 0.3 * ((r as f32 * 0.7 + ch as f32).sin() * (col as f32 * 0.45).cos())
                })
                .collect(),
        }
    }

    /// At the fitted size the terms are the inverse DCT of the kept coefficients: with every
    /// coefficient kept, the prediction plus the terms is the image.
    #[test]
    fn all_terms_restore_the_image_at_the_fitted_size() {
        for (h, w, c) in [(7, 5, 1), (6, 9, 3), (1, 4, 1)] {
            let img = image(h, w, c);
            let pred: Vec<f32> = img.data.iter().map(|v| v * 0.5 + 0.1).collect();
            let terms = DctTerms::of_residual(&img, &pred, h * w * c).unwrap();
            assert_eq!(terms.len(), h * w * c);
            terms.check(h, w, c).unwrap();
            let mut out = pred.clone();
            terms.add_to((h, w), (h, w, c), &mut out);
            for (a, b) in out.iter().zip(&img.data) {
                assert!((a - b).abs() < 1e-5, "{a} vs {b}");
            }
        }
    }

    /// `k` terms are the best `k`-term correction: the error left is the residual's energy
    /// outside the kept coefficients (Parseval), and it falls as `k` grows.
    #[test]
    fn k_terms_remove_the_k_largest_coefficients_energy() {
        let (h, w, c) = (11, 13, 1);
        let img = image(h, w, c);
        let pred = vec![0.5f32; h * w];
        let res = Image {
            data: img.data.iter().map(|v| v - 0.5).collect(),
            ..img.clone()
        };
        let coeffs = crate::inr::dct::forward(&res).unwrap();
        let mut mags: Vec<f64> = coeffs.iter().map(|v| v * v).collect();
        mags.sort_by(|a, b| b.total_cmp(a));
        let mut last = f64::INFINITY;
        for k in [0, 1, 5, 40, h * w - 1] {
            let terms = DctTerms::of_residual(&img, &pred, k).unwrap();
            let mut out = pred.clone();
            terms.add_to((h, w), (h, w, c), &mut out);
            let err: f64 = out
                .iter()
                .zip(&img.data)
                .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
                .sum();
            let expect: f64 = mags[k..].iter().sum();
            assert!(
                (err - expect).abs() < 1e-6 + 1e-4 * expect,
                "k={k}: {err} vs {expect}"
            );
            assert!(err <= last);
            last = err;
        }
    }

    /// At another size a term is the same continuous cosine: rendered at twice the size, the
    /// terms of a smooth residual agree with the fitted size's at the shared positions.
    #[test]
    fn terms_render_at_any_size_as_cosines_of_the_unit_coordinates() {
        let terms = DctTerms {
            indices: vec![0, 3 * 8 + 2, 5 * 8 + 7],
            values: vec![0.5, -0.25, 0.125],
        };
        terms.check(6, 8, 1).unwrap();
        let (h, w) = (12, 20);
        let mut out = vec![0.0f32; h * w];
        terms.add_to((6, 8), (h, w, 1), &mut out);
        for i in 0..h {
            for j in 0..w {
                let (u, v) = ((i as f64 + 0.5) / h as f64, (j as f64 + 0.5) / w as f64);
                let f = |a: usize, b: usize, c: f64| {
                    c * alpha(a, 6)
                        * alpha(b, 8)
                        * (std::f64::consts::PI * a as f64 * u).cos()
                        * (std::f64::consts::PI * b as f64 * v).cos()
                };
                let expect = f(0, 0, 0.5) + f(3, 2, -0.25) + f(5, 7, 0.125);
                assert!((out[i * w + j] as f64 - expect).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn bad_terms_and_shares_are_errors() {
        let img = image(4, 4, 1);
        assert!(DctTerms::of_residual(&img, &[0.0; 3], 2).is_err());
        let mut nan = vec![0.0f32; 16];
        nan[3] = f32::NAN;
        assert!(DctTerms::of_residual(&img, &nan, 2).is_err());
        let t = |indices: Vec<u32>, values: Vec<f32>| DctTerms { indices, values };
        assert!(t(vec![16], vec![1.0]).check(4, 4, 1).is_err());
        assert!(t(vec![3, 2], vec![1.0, 1.0]).check(4, 4, 1).is_err());
        assert!(t(vec![1], vec![f32::INFINITY]).check(4, 4, 1).is_err());
        assert!(t(vec![1], vec![]).check(4, 4, 1).is_err());
        for bad in [-0.1, 1.0, f64::NAN] {
            assert!(check_share(bad).is_err());
        }
        assert_eq!(terms_of(3000, 1.0 / 6.0), 500);
        assert_eq!(terms_of(1, 0.5), 0);
    }
}
