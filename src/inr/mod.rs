//! Images as sparse implicit neural representations (ARCHITECTURE.md, "Images").
//!
//! A sample is one pixel (gray) or one pixel-channel (colour): the grid axes are
//! (rows, columns[, channels]), row-major, so sample `i = (r·W + c)·C + ch`. Its features are
//! random Fourier features of the grid coordinates, generated inside the backends from the
//! [`InrSpec`]; a fitted model is that spec plus the `s` (index, value) pairs.

pub mod colour;
pub mod dct;
pub mod fit;
mod fit_imp;
pub mod image;
pub mod planes;
pub mod spectrum;
pub mod terms;

use crate::backend::{self, cpu::CpuBackend, BackendChoice, GateSource, Slot};
use crate::error::{Error, Param, Result};
use crate::iht::Gating;
use crate::imp::{ImpDevice, ImpModel};
use crate::problem::{AxisCoords, Features, FourierSpec, GateMode, Problem};
use crate::sparse::SparseVec;
use std::sync::Arc;

pub use self::image::Image;

/// How the spatial axes are given coordinates.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Coords {
    /// Pixel centres in (0, 1): σ is in cycles per image; the model renders at any size.
    Unit,
    /// The paper's integer pixel indices: σ is in cycles per pixel.
    Pixel,
}

impl Coords {
    pub fn as_str(self) -> &'static str {
        match self {
            Coords::Unit => "unit",
            Coords::Pixel => "pixel",
        }
    }
}

/// Everything that defines the features and gates of an image model.
#[derive(Clone, Debug, PartialEq)]
pub struct InrSpec {
    /// Hidden neurons `m`.
    pub neurons: usize,
    /// Features `d` (sin/cos pairs, so even).
    pub features: usize,
    /// Standard deviation of the frequencies per grid axis (rows, columns[, channels]).
    pub sigma: Vec<f64>,
    /// Coordinates of the spatial axes; the channel axis always uses integer coordinates.
    pub coords: Coords,
    pub feature_seed: u64,
    pub gate_seed: u64,
    pub gates: GateMode,
    pub constant_feature: bool,
    /// Frequencies read off the fitted image's spectrum (row-major, one value per grid axis,
    /// in the units of `coords`), which replace the last rows of the seed's Gaussian draw
    /// ([`spectrum::Spectrum::frequencies`]). Empty: all drawn from the seed.
    pub image_frequencies: Vec<f32>,
}

/// The gate seed derived from the feature seed (SplitMix64 finaliser), so one `--seed` fixes
/// both draws while keeping them independent.
pub fn gate_seed(feature_seed: u64) -> u64 {
    let mut z = feature_seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Grid axes of an image: (rows, columns) for gray, (rows, columns, channels) for colour.
pub fn grid_axes(height: usize, width: usize, channels: usize) -> Vec<usize> {
    if channels == 1 {
        vec![height, width]
    } else {
        vec![height, width, channels]
    }
}

/// Per-axis σ from the command line's spatial σ (one value for both axes, or rows,cols) and the
/// channel σ. With unit coordinates a single σ is meant for the longer side and scaled to the
/// shorter one, so frequencies are isotropic in pixels (σ_axis = σ_pix · L_axis).
pub fn sigma_per_axis(
    spatial: &[f64],
    channel: f64,
    coords: Coords,
    height: usize,
    width: usize,
    channels: usize,
) -> Result<Vec<f64>> {
    let mut sigma = match (spatial, coords) {
        ([s], Coords::Unit) => {
            let long = height.max(width) as f64;
            vec![s * height as f64 / long, s * width as f64 / long]
        }
        ([s], Coords::Pixel) => vec![*s, *s],
        ([r, c], _) => vec![*r, *c],
        _ => {
            return Err(Error::invalid(
                Param::Sigma,
                "give one value (both axes) or two separated by a comma (rows,columns)",
            ))
        }
    };
    if channels > 1 {
        sigma.push(channel);
    }
    if let Some(bad) = sigma.iter().find(|s| !s.is_finite() || **s < 0.0) {
        return Err(Error::invalid(
            Param::Sigma,
            format!("{bad} is not a valid standard deviation (finite, at least 0)"),
        ));
    }
    Ok(sigma)
}

impl InrSpec {
    /// Coordinates for a grid of `axes` when the model was fitted on `fit_axes`.
    pub fn axis_coords(&self, fit_axes: &[usize], axes: &[usize]) -> Vec<AxisCoords> {
        axes.iter()
            .zip(fit_axes)
            .enumerate()
            .map(|(a, (&len, &fit_len))| {
                if a >= 2 {
                    return AxisCoords::Integer; // channels
                }
                match self.coords {
                    Coords::Unit => AxisCoords::Unit,
                    Coords::Pixel if len == fit_len => AxisCoords::Integer,
                    // New pixel centres mapped onto the original grid's integer coordinates:
                    // c = (t + ½)·L/L' − ½.
                    Coords::Pixel => {
                        let scale = fit_len as f64 / len as f64;
                        AxisCoords::Affine {
                            scale,
                            offset: 0.5 - 0.5 / scale,
                        }
                    }
                }
            })
            .collect()
    }

    pub fn fourier(&self, coords: Vec<AxisCoords>) -> FourierSpec {
        FourierSpec {
            d: self.features,
            seed: self.feature_seed,
            sigma: self.sigma.clone(),
            coords,
            constant_feature: self.constant_feature,
            given: self.image_frequencies.clone(),
        }
    }

    /// The sensing problem on a grid of `axes` (a model fitted on `fit_axes`) with targets `y`.
    pub fn problem(&self, fit_axes: &[usize], axes: &[usize], y: Vec<f32>) -> Result<Problem> {
        if axes.len() != fit_axes.len() || axes.len() != self.sigma.len() {
            return Err(Error::invalid(Param::Sigma, "one sigma per grid axis"));
        }
        let grid = self.fourier(self.axis_coords(fit_axes, axes)).grid(axes)?;
        Problem::new(
            self.features,
            self.neurons,
            Features::Grid(grid),
            y,
            self.gates,
            self.gate_seed,
        )
    }
}

/// A fitted image model: the spec, the fitted image's shape, how it gates, and the weights.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageModel {
    pub spec: InrSpec,
    pub height: usize,
    pub width: usize,
    pub channels: usize,
    pub gating: Gating,
    /// The hidden layer `u_j` (flat `j·d + k`).
    pub w: SparseVec,
    /// An output layer `V` (one weight per neuron): the model is `Σ_j V_j relu(u_j·φ(x))`
    /// (IMP's pruned network, `V` of any sign). `None`: IHT's plain sum of the gated neurons.
    pub output: Option<Vec<f32>>,
    /// DCT terms added to the network's prediction before clamping ([`terms`]; none for IMP
    /// and the paper's variant).
    pub dct: terms::DctTerms,
}

impl ImageModel {
    /// The model's size: its weights, IMP's nonzero output weights and its DCT terms.
    pub fn nonzeros(&self) -> usize {
        self.w.len()
            + self
                .output
                .as_ref()
                .map_or(0, |o| o.iter().filter(|&&x| x != 0.0).count())
            + self.dct.len()
    }

    pub fn fit_axes(&self) -> Vec<usize> {
        grid_axes(self.height, self.width, self.channels)
    }

    /// Predicts the image at `height × width` on the chosen backend, clamped to [0, 1].
    pub fn render(
        &self,
        choice: BackendChoice,
        adapter: Option<&str>,
        height: usize,
        width: usize,
    ) -> Result<Image> {
        if height == 0 || width == 0 {
            return Err(Error::invalid(
                Param::Size,
                "the rendered image needs at least 1×1 pixels",
            ));
        }
        image::check_pixels(height, width)?;
        let axes = grid_axes(height, width, self.channels);
        let n = axes.iter().try_fold(1usize, |a, &b| a.checked_mul(b));
        let n = n
            .filter(|&n| n <= u32::MAX as usize)
            .ok_or_else(|| Error::invalid(Param::Size, "the rendered image is too large"))?;
        let problem = self.spec.problem(&self.fit_axes(), &axes, vec![0.0; n])?;
        if let Some(v) = &self.output {
            let data = self.render_mlp(v, &problem, choice, adapter)?;
            return Ok(Image {
                height,
                width,
                channels: self.channels,
                data,
            });
        }
        let s = self.w.len().clamp(1, problem.signal_len());
        let feature_bytes = backend::cpu::column_bytes(n, self.spec.features);
        let mut be = backend::create(choice, adapter, Arc::new(problem), s)?;
        let mut data = if be.info().kind == "cpu" && feature_bytes > backend::DEFAULT_FEATURE_CACHE
        {
            // Too large for the CPU backend's feature cache, it would generate every
            // feature entry on the fly (a sin/cos per multiply-add); bands of rows with
            // cached features are much faster.
            drop(be);
            self.render_cpu_bands(height, width, RENDER_TILE_BYTES)?
        } else {
            predict_unclamped(be.as_backend(), &self.w, self.gating)?
        };
        self.dct.add_to(
            (self.height, self.width),
            (height, width, self.channels),
            &mut data,
        );
        clamp(&mut data);
        Ok(Image {
            height,
            width,
            channels: self.channels,
            data,
        })
    }
}

impl ImageModel {
    /// `Σ_j V_j relu(u_j·φ(x))` on every sample of `problem`, clamped to [0, 1], through
    /// IMP's network on the chosen backend.
    fn render_mlp(
        &self,
        v: &[f32],
        problem: &Problem,
        choice: BackendChoice,
        adapter: Option<&str>,
    ) -> Result<Vec<f32>> {
        if v.len() != self.spec.neurons {
            return Err(Error::invalid(
                Param::Model,
                format!(
                    "an image model has one output weight per neuron: {} for m = {}",
                    v.len(),
                    self.spec.neurons
                ),
            ));
        }
        let model = ImpModel {
            d: self.spec.features,
            m: self.spec.neurons,
            c: 1,
            u: self.w.clone(),
            v: v.to_vec(),
        };
        let device = ImpDevice::from_choice(choice, adapter)?;
        let mut out = model.predict(&problem.features, problem.n, &device)?;
        for x in &mut out {
            *x = x.clamp(0.0, 1.0);
        }
        Ok(out)
    }
}

/// Feature bytes of one band of rows when a large image is rendered on the CPU.
pub const RENDER_TILE_BYTES: u64 = 256 << 20;

impl ImageModel {
    /// Host memory a render at `height × width` will hold (`crate::budget`): the per-pixel
    /// buffers (targets, residuals, prediction, the image, its PNG) and the cached features
    /// (at most one band of [`RENDER_TILE_BYTES`] beyond the CPU backend's cache).
    pub fn render_memory(&self, height: usize, width: usize) -> crate::budget::Estimate {
        let n = height as u64 * width as u64 * self.channels as u64;
        let mut e = crate::budget::Estimate::default();
        e.add("spinr itself", crate::budget::BASE_BYTES);
        e.add("per-pixel state", n * (5 * 4 + 1));
        let features = backend::cpu::column_bytes(n as usize, self.spec.features);
        e.add(
            "cached features",
            if features <= backend::DEFAULT_FEATURE_CACHE {
                features
            } else {
                RENDER_TILE_BYTES
            },
        );
        e.add("sparse weights", 8 * 8 * self.w.len() as u64);
        e
    }

    /// Renders the network (unclamped) on the CPU in bands of rows, each with its features
    /// cached.
    fn render_cpu_bands(&self, height: usize, width: usize, band_bytes: u64) -> Result<Vec<f32>> {
        let row_samples = width * self.channels;
        let rows = ((band_bytes / (row_samples as u64 * self.spec.features as u64 * 4)) as usize)
            .clamp(1, height);
        let fit_axes = self.fit_axes();
        let full = self
            .spec
            .axis_coords(&fit_axes, &grid_axes(height, width, self.channels));
        let mut out = Vec::with_capacity(height * row_samples);
        for r0 in (0..height).step_by(rows) {
            let band = rows.min(height - r0);
            let mut coords = full.clone();
            // The same coordinates as row r0 + t of the whole image.
            coords[0] = match full[0] {
                AxisCoords::Integer => AxisCoords::Affine {
                    scale: 1.0,
                    offset: r0 as f64,
                },
                AxisCoords::Unit => AxisCoords::Affine {
                    scale: 1.0 / height as f64,
                    offset: r0 as f64 + 0.5,
                },
                AxisCoords::Affine { scale, offset } => AxisCoords::Affine {
                    scale,
                    offset: offset + r0 as f64,
                },
            };
            let axes = grid_axes(band, width, self.channels);
            let grid = self.spec.fourier(coords).grid(&axes)?;
            let problem = Problem::new(
                self.spec.features,
                self.spec.neurons,
                Features::Grid(grid),
                vec![0.0; band * row_samples],
                self.spec.gates,
                self.spec.gate_seed,
            )?;
            let s = self.w.len().clamp(1, problem.signal_len());
            let mut be = CpuBackend::new(Arc::new(problem), s, band_bytes)?;
            out.extend(predict_unclamped(&mut be, &self.w, self.gating)?);
        }
        Ok(out)
    }
}

/// `A w` on every sample with the model's gating, clamped to [0, 1] (the image range).
pub fn predict(be: &mut dyn backend::Backend, w: &SparseVec, gating: Gating) -> Result<Vec<f32>> {
    let mut out = predict_unclamped(be, w, gating)?;
    clamp(&mut out);
    Ok(out)
}

/// `A w` on every sample with the model's gating, as the network gives it.
pub fn predict_unclamped(
    be: &mut dyn backend::Backend,
    w: &SparseVec,
    gating: Gating,
) -> Result<Vec<f32>> {
    be.set_batch(None)?;
    be.load(Slot::W, w)?;
    be.set_gates(match gating {
        Gating::Random => GateSource::Random,
        Gating::SelfGated => GateSource::Slot(Slot::W),
    })?;
    be.predict(Slot::W)
}

/// Clamps predictions to the image range [0, 1].
pub fn clamp(values: &mut [f32]) {
    for v in values {
        *v = v.clamp(0.0, 1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_sigma_is_isotropic_in_pixels() {
        let s = sigma_per_axis(&[100.0], 0.05, Coords::Unit, 50, 200, 3).unwrap();
        assert_eq!(s, vec![25.0, 100.0, 0.05]);
        let s = sigma_per_axis(&[2.0], 0.05, Coords::Pixel, 50, 200, 1).unwrap();
        assert_eq!(s, vec![2.0, 2.0]);
        assert!(sigma_per_axis(&[1.0, 2.0, 3.0], 0.05, Coords::Unit, 5, 5, 1).is_err());
        assert!(sigma_per_axis(&[-1.0], 0.05, Coords::Unit, 5, 5, 1).is_err());
    }

    #[test]
    fn pixel_coordinates_resample_onto_the_fitted_grid() {
        let spec = InrSpec {
            neurons: 1,
            features: 4,
            sigma: vec![1.0, 1.0],
            coords: Coords::Pixel,
            feature_seed: 0,
            gate_seed: 1,
            gates: GateMode::Convex,
            constant_feature: true,
            image_frequencies: Vec::new(),
        };
        let c = spec.axis_coords(&[10, 10], &[20, 10]);
        assert!(matches!(c[1], AxisCoords::Integer));
        match c[0] {
            AxisCoords::Affine { scale, offset } => {
                // New pixels 0 and 1 straddle old pixel 0: centres at −0.25 and 0.25.
                assert!(((0.0 + offset) * scale + 0.25).abs() < 1e-12);
                assert!(((1.0 + offset) * scale - 0.25).abs() < 1e-12);
                assert!(((19.0 + offset) * scale - 9.25).abs() < 1e-12);
            }
            _ => panic!("expected affine coordinates"),
        }
    }

    #[test]
    fn rendering_in_bands_matches_the_whole_image() {
        for (coords, gates, gating) in [
            (Coords::Unit, GateMode::Sequential, Gating::SelfGated),
            (Coords::Pixel, GateMode::Convex, Gating::Random),
        ] {
            let model = ImageModel {
                spec: InrSpec {
                    neurons: 3,
                    features: 16,
                    sigma: vec![3.0, 2.0, 0.05],
                    coords,
                    feature_seed: 5,
                    gate_seed: gate_seed(5),
                    gates,
                    constant_feature: true,
                    image_frequencies: Vec::new(),
                },
                height: 7,
                width: 5,
                channels: 3,
                gating,
                w: SparseVec::from_pairs(
                    (0..48)
                        .step_by(3)
                        .map(|i| (i, 0.1 + i as f32 / 50.0))
                        .collect(),
                ),
                output: None,
                // Terms of every channel and of vertical frequencies across the bands.
                dct: terms::DctTerms {
                    indices: vec![0, 4, 17, 3 * 15 + 2, 6 * 15 + 14],
                    values: vec![0.9, -0.3, 0.2, 0.4, -0.25],
                },
            };
            let whole = model.render(BackendChoice::Cpu, None, 11, 6).unwrap().data;
            // Bands of 2 rows: 2 rows · 6 columns · 3 channels · 16 features · 4 bytes.
            let mut bands = model.render_cpu_bands(11, 6, 2 * 6 * 3 * 16 * 4).unwrap();
            model.dct.add_to((7, 5), (11, 6, 3), &mut bands);
            clamp(&mut bands);
            assert_eq!(bands.len(), whole.len());
            assert!(whole.iter().any(|&v| v > 0.0 && v < 1.0));
            let err = whole
                .iter()
                .zip(&bands)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(err < 1e-5, "{coords:?}: bands differ by {err}");
        }
    }

    /// An IMP model (output weights of both signs) renders as the network's predictions.
    #[test]
    fn a_model_with_an_output_layer_renders_the_networks_predictions() {
        let spec = InrSpec {
            neurons: 4,
            features: 10,
            sigma: vec![2.0, 3.0],
            coords: Coords::Unit,
            feature_seed: 3,
            gate_seed: gate_seed(3),
            gates: GateMode::Sequential,
            constant_feature: true,
            image_frequencies: Vec::new(),
        };
        let u: Vec<f32> = (0..40).map(|i| ((i * 7 % 11) as f32 - 5.0) / 8.0).collect();
        let net = ImpModel::from_dense(10, 4, 1, &u, &[0.9, -0.4, 0.7, 0.0]);
        let model = ImageModel::from_imp(&net, &spec, 6, 5, 1).unwrap();
        let img = model.render(BackendChoice::Cpu, None, 6, 5).unwrap();
        let problem = spec.problem(&[6, 5], &[6, 5], vec![0.0; 30]).unwrap();
        let want = net.predict(&problem.features, 30, &ImpDevice::Cpu).unwrap();
        assert!(want.iter().any(|&v| v < 0.0) && want.iter().any(|&v| v > 0.0 && v < 1.0));
        for (a, b) in img.data.iter().zip(&want) {
            assert_eq!(*a, b.clamp(0.0, 1.0));
        }
        // Also by hand: Σ_j V_j relu(u_j·φ) at one pixel.
        let mut phi = vec![0f32; 10];
        problem.fill_row(13, &mut phi);
        let by_hand: f32 = (0..4)
            .map(|j| {
                let z: f32 = (0..10).map(|k| u[j * 10 + k] * phi[k]).sum();
                [0.9, -0.4, 0.7, 0.0][j] * z.max(0.0)
            })
            .sum();
        assert!((by_hand - want[13]).abs() < 1e-5);
        let mut wrong = model.clone();
        wrong.output = Some(vec![1.0; 3]);
        assert!(wrong.render(BackendChoice::Cpu, None, 6, 5).is_err());
    }

    #[test]
    fn gate_seed_differs_from_feature_seed() {
        assert_ne!(gate_seed(0), 0);
        assert_ne!(gate_seed(1), gate_seed(0));
    }
}
