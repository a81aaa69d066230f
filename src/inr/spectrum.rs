//! The default frequency scale of an image fit, read off the image (README, "Choosing σ").
//!
//! A fit with `s` nonzeros can only afford the frequencies that matter most, and which those
//! are depends on the image and on `s`: a smooth photo wants low frequencies, a texture high
//! ones, and more nonzeros reach further up. The `s`-term DCT approximation (the yardstick of
//! [`super::dct`]) already names them, so σ follows from where its terms lie: the median
//! frequency of its `s` largest coefficients (the constant terms left out), scaled down
//! slowly as `s` grows because the `d` random features are shared by every neuron and the
//! strong low frequencies must stay covered. Measured on eight photos at 128² and 256²,
//! s = 1000…10 000 (σ 6…30 swept per photo): the best σ ranged from 8 to 25 cycles per image,
//! and this rule lands within 0.45 dB of the best σ of every sweep, where the former fixed 20
//! lost up to 1.9 dB.

use super::dct;
use super::Image;
use crate::error::Result;

/// `s` at which σ is the median frequency itself; above it σ shrinks as `(s/S_REF)^-γ`.
const S_REF: f64 = 1000.0;
/// The exponent γ of that shrinking (best measured σ over median: about 1 at s = 1000, 0.9 at
/// 3000, 0.75 at 10 000).
const SHRINK: f64 = 0.12;
/// The lower bound in cycles per image (longer side); the upper is a third of the longer
/// side in pixels, as for the fixed default.
const MIN_SIGMA: f64 = 1.0;

/// The median frequency of the `s` largest DCT terms of `img` that are not a channel's
/// constant term, per axis (RMS of the two axes' frequencies), in cycles per image along the
/// longer side. `None` when all of them are constant terms or at rounding level (a flat image,
/// or `s` ≤ channels).
pub fn median_frequency(img: &Image, s: usize) -> Result<Option<f64>> {
    let coeffs = dct::forward(img)?;
    let (h, w, c) = (img.height, img.width, img.channels);
    let long = h.max(w) as f64;
    // Terms at rounding level carry nothing (a flat image's are all but its constant).
    let floor = 1e-6 * coeffs.iter().fold(0.0f64, |a, c| a.max(c.abs()));
    let mut f: Vec<f64> = dct::largest(&coeffs, s)
        .into_iter()
        .filter(|&i| coeffs[i].abs() > floor)
        .filter_map(|i| {
            let (kr, kc) = (i / c / w, i / c % w);
            // DCT term k of an axis of L samples is k/2 cycles per L samples.
            let (fr, fc) = (kr as f64 / (2 * h) as f64, kc as f64 / (2 * w) as f64);
            (kr + kc > 0).then(|| ((fr * fr + fc * fc) / 2.0).sqrt() * long)
        })
        .collect();
    if f.is_empty() {
        return Ok(None);
    }
    let mid = (f.len() - 1) / 2;
    let (_, m, _) = f.select_nth_unstable_by(mid, f64::total_cmp);
    Ok(Some(*m))
}

/// Images above this many pixels are read from a Lanczos-resampled copy of this many: its
/// DCT and ranking take 16 bytes per sample, and reading σ happens before a fit's memory
/// budget is checked. The copy keeps every frequency up to half its side (512 cycles per
/// image), above any median a fit's `s` reaches.
pub const READ_MAX_PIXELS: usize = 1 << 20;

/// spinr's σ (unit coordinates: cycles per image along the longer side) for fitting `img`
/// with `s` nonzeros; `fallback` when the image has no structure to read it from.
pub fn auto_sigma(img: &Image, s: usize, fallback: f64) -> Result<f64> {
    auto_sigma_within(img, s, fallback, READ_MAX_PIXELS)
}

fn auto_sigma_within(img: &Image, s: usize, fallback: f64, max_pixels: usize) -> Result<f64> {
    let long = img.height.max(img.width) as f64;
    let (h, w) = (img.height, img.width);
    let median = if h * w > max_pixels {
        // Frequencies in cycles per image do not change with the sampling.
        let f = (max_pixels as f64 / (h * w) as f64).sqrt();
        let side = |x: usize| ((x as f64 * f).floor() as usize).max(1);
        median_frequency(&img.resized(side(h), side(w)), s)?
    } else {
        median_frequency(img, s)?
    };
    let Some(median) = median else {
        return Ok(fallback);
    };
    let shrink = (s as f64 / S_REF).max(1.0).powf(-SHRINK);
    Ok((median * shrink).clamp(MIN_SIGMA, (long / 3.0).max(MIN_SIGMA)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    /// A sum of two cosines, `k1` and `k2` cycles across the width, constant down the rows.
    fn stripes(h: usize, w: usize, k1: f64, k2: f64) -> Image {
        let mut data = Vec::with_capacity(h * w);
        for _ in 0..h {
            for col in 0..w {
                let x = (col as f64 + 0.5) / w as f64;
                data.push(
                    (0.5 + 0.2 * (PI * 2.0 * k1 * x).cos() + 0.1 * (PI * 2.0 * k2 * x).cos())
                        as f32,
                );
            }
        }
        Image {
            height: h,
            width: w,
            channels: 1,
            data,
        }
    }

    #[test]
    fn reads_the_frequencies_of_the_largest_terms() {
        // Cosines of 4 and 10 cycles are DCT terms 8 and 20 of the columns; the two largest
        // non-constant terms have frequencies 4/√2 and 10/√2 per axis (RMS over two axes),
        // and the median of two is the lower.
        let img = stripes(16, 64, 4.0, 10.0);
        let f = median_frequency(&img, 3).unwrap().unwrap();
        assert!((f - 4.0 / 2f64.sqrt()).abs() < 1e-9, "{f}");
        // With only the constant term there is nothing to read.
        assert_eq!(median_frequency(&img, 1).unwrap(), None);
        let flat = Image {
            data: vec![0.3; 64],
            ..stripes(8, 8, 0.0, 0.0)
        };
        assert_eq!(auto_sigma(&flat, 10, 7.5).unwrap(), 7.5);
    }

    /// A large image is read from a smaller copy, with the same result where its terms lie
    /// well below the copy's Nyquist frequency.
    #[test]
    fn large_images_are_read_from_a_resampled_copy() {
        let big = stripes(64, 96, 3.0, 5.0);
        let whole = auto_sigma_within(&big, 3, 20.0, usize::MAX).unwrap();
        let copy = auto_sigma_within(&big, 3, 20.0, 32 * 48).unwrap();
        assert!((whole - copy).abs() < 0.02 * whole, "{whole} vs {copy}");
    }

    #[test]
    fn finer_images_ask_for_higher_frequencies() {
        let coarse = stripes(32, 96, 3.0, 5.0);
        let fine = stripes(32, 96, 12.0, 20.0);
        let a = auto_sigma(&coarse, 3, 20.0).unwrap();
        let b = auto_sigma(&fine, 3, 20.0).unwrap();
        assert!(b > 3.0 * a, "{a} {b}");
        // Bounded by a third of the longer side.
        let sharp = stripes(8, 30, 14.0, 14.5);
        assert!(auto_sigma(&sharp, 3, 20.0).unwrap() <= 10.0);
    }
}
