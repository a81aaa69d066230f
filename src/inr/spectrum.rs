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
use super::{Coords, Image};
use crate::error::Result;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};

/// `s` at which σ is the median frequency itself; above it σ shrinks as `(s/S_REF)^-γ`.
const S_REF: f64 = 1000.0;
/// The exponent γ of that shrinking (best measured σ over median: about 1 at s = 1000, 0.9 at
/// 3000, 0.75 at 10 000).
const SHRINK: f64 = 0.12;
/// The lower bound in cycles per image (longer side); the upper is a third of the longer
/// side in pixels, as for the fixed default.
const MIN_SIGMA: f64 = 1.0;

/// The `s` largest DCT terms of an image that carry something (not a channel's constant term,
/// not at rounding level), read once per fit: σ and the spectrum's frequencies both come
/// from them.
pub struct Spectrum {
    /// Per term: its DCT indices (row, column) on the read image and its magnitude, largest
    /// first.
    terms: Vec<(usize, usize, f64)>,
    /// The read image's rows and columns: a resampled copy of a large image
    /// ([`READ_MAX_PIXELS`]).
    read: (usize, usize),
}

impl Spectrum {
    /// Reads the `s` largest terms of `img`.
    pub fn read(img: &Image, s: usize) -> Result<Spectrum> {
        Self::read_within(img, s, READ_MAX_PIXELS)
    }

    fn read_within(img: &Image, s: usize, max_pixels: usize) -> Result<Spectrum> {
        let (h, w) = (img.height, img.width);
        // Frequencies in cycles per image do not change with the sampling.
        let copy;
        let img = if h * w > max_pixels {
            let f = (max_pixels as f64 / (h * w) as f64).sqrt();
            let side = |x: usize| ((x as f64 * f).floor() as usize).max(1);
            copy = img.resized(side(h), side(w));
            &copy
        } else {
            img
        };
        let coeffs = dct::forward(img)?;
        let (w, c) = (img.width, img.channels);
        // Terms at rounding level carry nothing (a flat image's are all but its constant).
        let floor = 1e-6 * coeffs.iter().fold(0.0f64, |a, c| a.max(c.abs()));
        let terms = dct::largest(&coeffs, s)
            .into_iter()
            .filter(|&i| coeffs[i].abs() > floor)
            .map(|i| (i / c / w, i / c % w, coeffs[i].abs()))
            .filter(|&(kr, kc, _)| kr + kc > 0)
            .collect();
        Ok(Spectrum {
            terms,
            read: (img.height, img.width),
        })
    }

    /// The median frequency of the terms, per axis (RMS of the two axes' frequencies), in
    /// cycles per image along the longer side. `None` when no term is left (a flat image, or
    /// `s` ≤ channels).
    pub fn median_frequency(&self) -> Option<f64> {
        let (h, w) = self.read;
        let long = h.max(w) as f64;
        let mut f: Vec<f64> = self
            .terms
            .iter()
            .map(|&(kr, kc, _)| {
                // DCT term k of an axis of L samples is k/2 cycles per L samples.
                let (fr, fc) = (kr as f64 / (2 * h) as f64, kc as f64 / (2 * w) as f64);
                ((fr * fr + fc * fc) / 2.0).sqrt() * long
            })
            .collect();
        if f.is_empty() {
            return None;
        }
        let mid = (f.len() - 1) / 2;
        let (_, m, _) = f.select_nth_unstable_by(mid, f64::total_cmp);
        Some(*m)
    }

    /// spinr's σ (unit coordinates: cycles per image along the longer side, `long` pixels)
    /// for a fit with `s` nonzeros; `fallback` when the image has no structure to read it from.
    pub fn sigma(&self, s: usize, long: usize, fallback: f64) -> f64 {
        let Some(median) = self.median_frequency() else {
            return fallback;
        };
        let long = long as f64;
        let shrink = (s as f64 / S_REF).max(1.0).powf(-SHRINK);
        (median * shrink).clamp(MIN_SIGMA, (long / 3.0).max(MIN_SIGMA))
    }
}

/// Images above this many pixels are read from a Lanczos-resampled copy of this many: its
/// DCT and ranking take 16 bytes per sample, and reading σ happens before a fit's memory
/// budget is checked. The copy keeps every frequency up to half its side (512 cycles per
/// image), above any median a fit's `s` reaches.
pub const READ_MAX_PIXELS: usize = 1 << 20;

/// Where a fit's feature frequencies come from.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Frequencies {
    /// All drawn from `N(0, σ²)` per axis: the paper's random Fourier features.
    Gaussian,
    /// Read off the image's spectrum: three quarters of the rows, each the frequency of one
    /// of its `s` largest DCT terms; the constant feature and the other rows stay Gaussian.
    Spectrum,
}

impl Frequencies {
    /// Where the frequencies of a fitted spec came from.
    pub fn of(spec: &super::InrSpec) -> Frequencies {
        if spec.image_frequencies.is_empty() {
            Frequencies::Gaussian
        } else {
            Frequencies::Spectrum
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Frequencies::Gaussian => "gaussian",
            Frequencies::Spectrum => "spectrum",
        }
    }
}

/// The share of the non-constant frequency rows a spectrum draw takes from the image; the
/// rest stay the seed's `N(0, σ²)` draw. Measured at 128², s = 1000 and 3000, seeds 0–2,
/// shares 0.5 / 0.75 / 1: all of them gained on brick (+1.4 to +3.5 dB) and the camera
/// (+0.3 to +0.7 dB); the whole spectrum lost most where the image is noise-like (gravel
/// −0.40 dB at s = 3000), 0.75 at most 0.14 dB (README, "Frequencies from the spectrum").
pub const SPECTRUM_SHARE: f64 = 0.75;

/// Rows of `d/2` frequencies a spectrum draw replaces (`constant`: row 0 is the constant
/// feature's and stays).
pub fn spectrum_rows(d: usize, constant: bool) -> usize {
    let room = d / 2 - usize::from(constant && d >= 2);
    ((room as f64 * SPECTRUM_SHARE).round() as usize).min(room)
}

/// A spectrum draw takes each frequency from one of the image's `s` largest DCT terms with
/// probability proportional to the square root of the term's magnitude: in proportion to the
/// magnitude, the few strongest terms are drawn again and again; uniformly, the weak tail
/// crowds out the strong (measured at 128², s = 1000 and 3000: the square root beat both on
/// the camera and brick, and the exponents 0.25 and 0.75 lost up to 1 dB on them, README
/// "Frequencies from the spectrum").
const WEIGHT_POWER: f64 = 0.5;

impl Spectrum {
    /// Frequencies for `rows` of the `d/2` feature frequencies of a fit of an `h × w` image
    /// with `channels` channels (row-major, one value per grid axis, in the units of
    /// `coords`): each is the frequency of one of the terms, drawn with replacement
    /// (with probability proportional to the square root of its magnitude,
    /// `WEIGHT_POWER`), with a random sign on the column axis (a DCT term
    /// `cos(πk_r r)·cos(πk_c c)` is the sum of the plane waves `(k_r, ±k_c)/2`). A colour
    /// image on the channel axis draws its channel frequency from `N(0, sigma_channel²)` as
    /// the seed's draw does. Empty when no term is left (a flat image, or `s` ≤ channels).
    ///
    /// Deterministic in `seed` and independent of the Gaussian draw that shares it.
    pub fn frequencies(
        &self,
        rows: usize,
        seed: u64,
        coords: Coords,
        (h, w): (usize, usize),
        channels: usize,
        sigma_channel: f64,
    ) -> Vec<f32> {
        if self.terms.is_empty() || rows == 0 {
            return Vec::new();
        }
        let weight = |m: f64| m.powf(WEIGHT_POWER);
        let total: f64 = self.terms.iter().map(|t| weight(t.2)).sum();
        // Unit coordinates count cycles per image, pixel coordinates cycles per pixel.
        let (per_r, per_c) = match coords {
            Coords::Unit => (1.0, 1.0),
            Coords::Pixel => (1.0 / h as f64, 1.0 / w as f64),
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(super::gate_seed(seed ^ SPECTRUM_SALT));
        let normal = Normal::new(0.0, 1.0).expect("unit normal");
        let mut out = Vec::with_capacity(rows * if channels > 1 { 3 } else { 2 });
        for _ in 0..rows {
            let mut u = rng.random::<f64>() * total;
            let &(kr, kc, _) = self
                .terms
                .iter()
                .find(|t| {
                    u -= weight(t.2);
                    u < 0.0
                })
                .unwrap_or(&self.terms[self.terms.len() - 1]);
            let sign = if rng.random::<bool>() { 1.0 } else { -1.0 };
            // DCT term k is k/2 cycles per image, whatever the read copy's size.
            out.push((kr as f64 / 2.0 * per_r) as f32);
            out.push((sign * kc as f64 / 2.0 * per_c) as f32);
            if channels > 1 {
                out.push((normal.sample(&mut rng) * sigma_channel) as f32);
            }
        }
        out
    }
}

/// Separates the spectrum draw's random stream from the Gaussian draw's (same `--seed`).
const SPECTRUM_SALT: u64 = 0x5350_4543_5452_554d;

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    fn median_frequency(img: &Image, s: usize) -> Result<Option<f64>> {
        Ok(Spectrum::read_within(img, s, usize::MAX)?.median_frequency())
    }

    fn auto_sigma_within(img: &Image, s: usize, fallback: f64, max_pixels: usize) -> Result<f64> {
        let long = img.height.max(img.width);
        Ok(Spectrum::read_within(img, s, max_pixels)?.sigma(s, long, fallback))
    }

    fn auto_sigma(img: &Image, s: usize, fallback: f64) -> Result<f64> {
        auto_sigma_within(img, s, fallback, READ_MAX_PIXELS)
    }

    fn spectral_frequencies(
        img: &Image,
        s: usize,
        rows: usize,
        seed: u64,
        coords: Coords,
        sigma_channel: f64,
    ) -> Result<Vec<f32>> {
        let (size, c) = ((img.height, img.width), img.channels);
        Ok(Spectrum::read(img, s)?.frequencies(rows, seed, coords, size, c, sigma_channel))
    }

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

    #[test]
    fn spectrum_draws_the_frequencies_of_the_largest_terms() {
        // Cosines of 4 and 10 cycles across the width, flat down the rows: the two largest
        // non-constant terms, so every row is (0, ±4) or (0, ±10) in unit coordinates.
        let img = stripes(16, 64, 4.0, 10.0);
        let f = spectral_frequencies(&img, 3, 400, 1, Coords::Unit, 0.05).unwrap();
        assert_eq!(f.len(), 800);
        for row in f.chunks(2) {
            assert_eq!(row[0], 0.0, "{row:?}");
            assert!([4.0, 10.0].contains(&row[1].abs()), "{row:?}");
        }
        // Both terms and both signs are drawn, the stronger in proportion to the square root
        // of its amplitude: expect 400·√2/(√2 + 1) ≈ 234 (uniform: 200, in proportion: 267).
        let count = |v: f32| f.chunks(2).filter(|r| r[1] == v).count();
        let strong = count(4.0) + count(-4.0);
        assert!(strong > 210 && strong < 258, "{strong}");
        assert!(count(4.0) > 0 && count(-4.0) > 0 && count(10.0) + count(-10.0) > 0);
        // Deterministic in the seed, different across seeds.
        assert_eq!(
            f,
            spectral_frequencies(&img, 3, 400, 1, Coords::Unit, 0.05).unwrap()
        );
        assert_ne!(
            f,
            spectral_frequencies(&img, 3, 400, 2, Coords::Unit, 0.05).unwrap()
        );
        // Pixel coordinates count cycles per pixel; a colour image gets a channel frequency.
        let px = spectral_frequencies(&img, 3, 400, 1, Coords::Pixel, 0.05).unwrap();
        for (p, u) in px.iter().zip(&f) {
            assert_eq!(*p, u / 64.0);
        }
        let rgb = Image {
            channels: 3,
            data: img.data.iter().flat_map(|&v| [v, v, v]).collect(),
            ..img.clone()
        };
        let c = spectral_frequencies(&rgb, 4, 10, 1, Coords::Unit, 0.05).unwrap();
        assert_eq!(c.len(), 30);
        assert!(
            c.chunks(3).all(|r| r[2].abs() < 0.5 && r[2] != 0.0),
            "{c:?}"
        );
        // Nothing to read: a flat image, or only the constant term in the s largest.
        let flat = Image {
            data: vec![0.3; 64],
            ..stripes(8, 8, 0.0, 0.0)
        };
        assert!(spectral_frequencies(&flat, 10, 5, 0, Coords::Unit, 0.05)
            .unwrap()
            .is_empty());
        assert!(spectral_frequencies(&img, 1, 5, 0, Coords::Unit, 0.05)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn spectrum_rows_leave_the_constant_row_and_take_the_share() {
        // The constant feature's row stays; the rest is the share's.
        assert!(spectrum_rows(512, true) <= 255);
        assert!(spectrum_rows(2, true) == 0 && spectrum_rows(2, false) <= 1);
    }
}
