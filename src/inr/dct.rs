//! A yardstick for sparse INRs: the best `s`-term approximation of an image in the orthonormal
//! 2-D DCT-II basis (per channel), so a fit with `s` nonzeros can be compared with the
//! classical transform code at the same count.
//!
//! Coefficients are kept in the image's own sample order (`(r·W + c)·C + ch`), and the `s`
//! largest in magnitude are chosen over all channels together, so colour images spend their
//! `s` terms wherever they matter most, as the INR's `s` weights do. Ties go to the lower
//! index, which makes the choice deterministic.

use crate::error::{check_finite, Error, Param, Result};
use crate::inr::Image;
use rustdct::{DctPlanner, TransformType2And3};
use std::sync::Arc;

/// The PSNR reported for an exact approximation, as for fits (`report.json`'s cap).
pub const PSNR_CAP: f64 = 200.0;

/// PSNR (peak 1, capped at [`PSNR_CAP`]) of the best `s`-term DCT approximation of `img`,
/// clamped to [0, 1], against `img`.
pub fn dct_psnr(img: &Image, s: usize) -> Result<f64> {
    let approx = approximate(img, s)?;
    let mse = approx
        .iter()
        .zip(&img.data)
        .map(|(&a, &x)| (a - x as f64).powi(2))
        .sum::<f64>()
        / approx.len() as f64;
    Ok(crate::metrics::psnr_from_mse(mse, 1.0).min(PSNR_CAP))
}

/// The best `s`-term DCT approximation of `img`, clamped to [0, 1] (for side-by-side views).
pub fn dct_approximation(img: &Image, s: usize) -> Result<Image> {
    Ok(Image {
        data: approximate(img, s)?.into_iter().map(|v| v as f32).collect(),
        ..img.clone()
    })
}

/// The approximation in f64, so an exact one measures as exact before rounding to f32.
fn approximate(img: &Image, s: usize) -> Result<Vec<f64>> {
    if s == 0 {
        return Err(Error::invalid(
            Param::Nonzeros,
            "the DCT comparison needs at least 1 coefficient (s ≥ 1)",
        ));
    }
    let mut c = forward(img)?;
    keep_largest(&mut c, s);
    let mut x = inverse(img.height, img.width, img.channels, &c)?;
    for v in &mut x {
        *v = v.clamp(0.0, 1.0);
    }
    Ok(x)
}

fn check_shape(height: usize, width: usize, channels: usize, len: usize) -> Result<()> {
    let n = height
        .checked_mul(width)
        .and_then(|p| p.checked_mul(channels));
    if height == 0 || width == 0 || channels == 0 {
        return Err(Error::invalid(
            Param::Size,
            format!("the DCT needs at least one pixel and channel ({height}×{width}×{channels})"),
        ));
    }
    if n != Some(len) {
        return Err(Error::invalid(
            Param::Size,
            format!(
                "{len} samples do not fill a {height}×{width}×{channels} image; \
                 build the image with Image::resized or inr::image::load"
            ),
        ));
    }
    Ok(())
}

/// Orthonormal 2-D DCT-II of each channel of `img`, in the image's sample order.
pub fn forward(img: &Image) -> Result<Vec<f64>> {
    check_shape(img.height, img.width, img.channels, img.data.len())?;
    check_finite("the image", &img.data)?;
    let x: Vec<f64> = img.data.iter().map(|&v| v as f64).collect();
    Ok(transform(
        img.height,
        img.width,
        img.channels,
        x,
        Direction::Forward,
    ))
}

/// The inverse of [`forward`]: orthonormal 2-D DCT-III per channel.
pub fn inverse(height: usize, width: usize, channels: usize, coeffs: &[f64]) -> Result<Vec<f64>> {
    check_shape(height, width, channels, coeffs.len())?;
    Ok(transform(
        height,
        width,
        channels,
        coeffs.to_vec(),
        Direction::Inverse,
    ))
}

/// Zeroes all but the `s` coefficients largest in magnitude (ties to the lower index).
pub fn keep_largest(coeffs: &mut [f64], s: usize) {
    if s >= coeffs.len() {
        return;
    }
    for &i in &ranked(coeffs, s)[s..] {
        coeffs[i] = 0.0;
    }
}

/// Positions of the `s` coefficients largest in magnitude (ties to the lower index), in no
/// particular order.
pub fn largest(coeffs: &[f64], s: usize) -> Vec<usize> {
    let mut order = ranked(coeffs, s);
    order.truncate(s);
    order
}

/// All positions, the `s` largest in magnitude first (ties to the lower index).
fn ranked(coeffs: &[f64], s: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..coeffs.len()).collect();
    if s == 0 || s >= coeffs.len() {
        return order;
    }
    // A total order (magnitude descending, then index), so the kept set is unique.
    order.select_nth_unstable_by(s - 1, |&a, &b| {
        coeffs[b].abs().total_cmp(&coeffs[a].abs()).then(a.cmp(&b))
    });
    order
}

#[derive(Clone, Copy, PartialEq)]
enum Direction {
    Forward,
    Inverse,
}

/// One orthonormal 1-D transform plan: rustdct's DCT-II is `X_k = Σ x_n cos(πk(2n+1)/2N)` and
/// its DCT-III `x_n = X_0/2 + Σ_{k≥1} X_k cos(…)`, both unscaled; the scalings here make them
/// orthonormal and mutually inverse.
struct Plan {
    dct: Arc<dyn TransformType2And3<f64>>,
    scratch: Vec<f64>,
    scale: f64,
}

impl Plan {
    fn new(planner: &mut DctPlanner<f64>, len: usize) -> Plan {
        let dct = planner.plan_dct2(len);
        let scratch = vec![0.0; dct.get_scratch_len()];
        Plan {
            dct,
            scratch,
            scale: (2.0 / len as f64).sqrt(),
        }
    }

    fn run(&mut self, buf: &mut [f64], dir: Direction) {
        match dir {
            Direction::Forward => {
                self.dct.process_dct2_with_scratch(buf, &mut self.scratch);
                for v in buf.iter_mut() {
                    *v *= self.scale;
                }
                buf[0] *= std::f64::consts::FRAC_1_SQRT_2;
            }
            Direction::Inverse => {
                for v in buf.iter_mut() {
                    *v *= self.scale;
                }
                buf[0] *= std::f64::consts::SQRT_2;
                self.dct.process_dct3_with_scratch(buf, &mut self.scratch);
            }
        }
    }
}

/// Separable 2-D transform of every channel of `data` (`h × w × c`, row-major), in place.
fn transform(h: usize, w: usize, c: usize, mut data: Vec<f64>, dir: Direction) -> Vec<f64> {
    let mut planner = DctPlanner::new();
    let mut rows = Plan::new(&mut planner, w);
    let mut cols = Plan::new(&mut planner, h);
    let mut line = vec![0.0; h.max(w)];
    for ch in 0..c {
        for r in 0..h {
            let buf = &mut line[..w];
            for (j, v) in buf.iter_mut().enumerate() {
                *v = data[(r * w + j) * c + ch];
            }
            rows.run(buf, dir);
            for (j, v) in buf.iter().enumerate() {
                data[(r * w + j) * c + ch] = *v;
            }
        }
        for col in 0..w {
            let buf = &mut line[..h];
            for (i, v) in buf.iter_mut().enumerate() {
                *v = data[(i * w + col) * c + ch];
            }
            cols.run(buf, dir);
            for (i, v) in buf.iter().enumerate() {
                data[(i * w + col) * c + ch] = *v;
            }
        }
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    /// A smooth image with some texture, values inside (0, 1).
    fn test_image(h: usize, w: usize, c: usize) -> Image {
        let mut data = Vec::with_capacity(h * w * c);
        for r in 0..h {
            for col in 0..w {
                for ch in 0..c {
                    let (y, x) = (r as f64 / h as f64, col as f64 / w as f64);
                    let v = 0.5
                        + 0.3 * (2.0 * PI * (x + 0.3 * ch as f64)).sin() * (PI * y).cos()
                        + 0.15 * ((r * 7 + col * 13 + ch * 5) % 11) as f64 / 11.0
                        - 0.07;
                    data.push(v as f32);
                }
            }
        }
        Image {
            height: h,
            width: w,
            channels: c,
            data,
        }
    }

    /// The textbook O(N⁴) orthonormal 2-D DCT-II of one channel.
    fn naive(img: &Image, ch: usize) -> Vec<f64> {
        let (h, w, c) = (img.height, img.width, img.channels);
        let a = |k: usize, n: usize| {
            if k == 0 {
                (1.0 / n as f64).sqrt()
            } else {
                (2.0 / n as f64).sqrt()
            }
        };
        let mut out = vec![0.0; h * w];
        for u in 0..h {
            for v in 0..w {
                let mut sum = 0.0;
                for r in 0..h {
                    for col in 0..w {
                        sum += img.data[(r * w + col) * c + ch] as f64
                            * (PI * (2 * r + 1) as f64 * u as f64 / (2 * h) as f64).cos()
                            * (PI * (2 * col + 1) as f64 * v as f64 / (2 * w) as f64).cos();
                    }
                }
                out[u * w + v] = a(u, h) * a(v, w) * sum;
            }
        }
        out
    }

    #[test]
    fn matches_the_naive_transform() {
        for (h, w, c) in [(5, 7, 3), (4, 4, 1), (1, 6, 1), (3, 1, 3), (1, 1, 1)] {
            let img = test_image(h, w, c);
            let fast = forward(&img).unwrap();
            for ch in 0..c {
                let slow = naive(&img, ch);
                for (k, want) in slow.iter().enumerate() {
                    let got = fast[k * c + ch];
                    assert!(
                        (got - want).abs() < 1e-12,
                        "{h}×{w}×{c} [{k},{ch}]: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn all_coefficients_reconstruct_exactly() {
        for (h, w, c) in [(9, 16, 3), (1, 17, 1), (13, 1, 1), (6, 5, 1)] {
            let img = test_image(h, w, c);
            let back = inverse(h, w, c, &forward(&img).unwrap()).unwrap();
            let err = back
                .iter()
                .zip(&img.data)
                .map(|(a, &b)| (a - b as f64).abs())
                .fold(0.0, f64::max);
            assert!(err < 1e-12, "{h}×{w}×{c}: {err}");
            assert_eq!(dct_psnr(&img, h * w * c).unwrap(), PSNR_CAP);
            assert_eq!(dct_psnr(&img, usize::MAX).unwrap(), PSNR_CAP);
        }
    }

    /// The separable basis image (u, v), unit norm.
    fn basis(h: usize, w: usize, u: usize, v: usize) -> Vec<f64> {
        let mut c = vec![0.0; h * w];
        c[u * w + v] = 1.0;
        inverse(h, w, 1, &c).unwrap()
    }

    #[test]
    fn a_basis_image_is_one_term() {
        let (h, w) = (6, 9);
        for (u, v) in [(0, 0), (1, 0), (0, 4), (5, 8), (2, 3)] {
            let b = basis(h, w, u, v);
            let img = Image {
                height: h,
                width: w,
                channels: 1,
                data: b.iter().map(|&x| x as f32).collect(),
            };
            let mut c = forward(&img).unwrap();
            keep_largest(&mut c, 1);
            let back = inverse(h, w, 1, &c).unwrap();
            let err = back
                .iter()
                .zip(&img.data)
                .map(|(a, &b)| (a - b as f64).abs())
                .fold(0.0, f64::max);
            assert!(err < 1e-7, "({u},{v}): {err}");
        }
        // Within [0, 1], clamping changes nothing: a constant image is the DC term of each
        // channel, and an offset basis image is two terms.
        let flat = Image {
            height: h,
            width: w,
            channels: 3,
            data: vec![0.25; h * w * 3],
        };
        assert!(dct_psnr(&flat, 2).unwrap() < 30.0);
        assert_eq!(dct_psnr(&flat, 3).unwrap(), PSNR_CAP);
        let b = basis(h, w, 2, 3);
        let peak = b.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        let wave = Image {
            height: h,
            width: w,
            channels: 1,
            data: b.iter().map(|x| (0.5 + 0.4 * x / peak) as f32).collect(),
        };
        assert!(dct_psnr(&wave, 1).unwrap() < 30.0);
        assert!(dct_psnr(&wave, 2).unwrap() > 130.0);
    }

    #[test]
    fn psnr_does_not_decrease_with_s() {
        for (h, w, c) in [(16, 12, 1), (7, 10, 3)] {
            let img = test_image(h, w, c);
            let n = h * w * c;
            let mut last = 0.0;
            for s in (1..=n).step_by(3).chain([n]) {
                let p = dct_psnr(&img, s).unwrap();
                assert!(p >= last - 1e-9, "{h}×{w}×{c} s={s}: {p} < {last}");
                last = p;
            }
            assert_eq!(last, PSNR_CAP);
        }
    }

    #[test]
    fn camera_at_128_matches_the_recorded_yardstick() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/camera.png");
        let img = crate::inr::image::load(&path, None)
            .unwrap()
            .resized(128, 128);
        // Recorded for comparison with `spinr fit assets/camera.png --resize 128` (README).
        for (s, want) in [(1000, 25.26), (3000, 29.92)] {
            let p = dct_psnr(&img, s).unwrap();
            assert!(
                (p - want).abs() < 0.02,
                "s = {s}: {p:.3} dB, expected {want}"
            );
        }
    }

    #[test]
    fn ties_go_to_the_lower_index() {
        let mut c = vec![1.0, -3.0, 2.0, 3.0, -2.0, 0.5];
        keep_largest(&mut c, 3);
        assert_eq!(c, vec![0.0, -3.0, 2.0, 3.0, 0.0, 0.0]);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let img = test_image(4, 4, 1);
        let e = dct_psnr(&img, 0).unwrap_err().to_string();
        assert!(e.contains("at least 1 coefficient"), "{e}");
        let mut short = img.clone();
        short.data.pop();
        assert!(dct_psnr(&short, 3).is_err());
        let mut nan = img.clone();
        nan.data[5] = f32::NAN;
        assert!(dct_psnr(&nan, 3)
            .unwrap_err()
            .to_string()
            .contains("index 5"));
        let empty = Image {
            height: 0,
            width: 4,
            channels: 1,
            data: vec![],
        };
        assert!(dct_psnr(&empty, 3).is_err());
        assert_eq!(dct_approximation(&img, 5).unwrap().data.len(), 16);
    }
}
