//! The sensing problem: samples, features, targets and gates (ARCHITECTURE.md, "The model", "Images").
//!
//! Features are either a dense `n×d` matrix given in memory (planted networks, MNIST
//! classification) or random Fourier features of a pixel grid, generated on the fly from small
//! per-axis phase tables so that `n×d` features are never stored.

use crate::error::{check_finite, Error, Param, Result};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

/// How the activation pattern `D_j` of each neuron is chosen.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum GateMode {
    /// Fixed random gates `h_j = g_j`: a linear compressed-sensing problem.
    Convex,
    /// The paper's "sequential convex": random gates for steps 0 and 1, then `h_j ← w_j`.
    Sequential,
    /// Every gate open, one neuron: plain Gaussian compressed sensing (a sanity check).
    Gaussian,
}

impl GateMode {
    pub fn as_str(self) -> &'static str {
        match self {
            GateMode::Convex => "convex",
            GateMode::Sequential => "sequential",
            GateMode::Gaussian => "gaussian",
        }
    }
}

/// Random Fourier features `[sin 2π(B v), cos 2π(B v)]` of the points of a grid.
///
/// Sample `i` is the grid point with row-major multi-index over `axes`. Because `B v` is a sum
/// over axes, its fractional part is the sum of per-axis tables `fract(B[f,a] · coord_a(t))`
/// computed once in f64: exact phases, identical on every backend, memory `d/2 · Σ axes`.
#[derive(Clone, Debug, PartialEq)]
pub struct GridFourier {
    /// Grid size per axis, slowest first (rows, columns[, channels]).
    pub axes: Vec<usize>,
    /// `d/2` frequencies; `phases[a][f * axes[a] + t]` = `fract(B[f,a] · coord_a(t))`.
    pub phases: Vec<Vec<f32>>,
}

/// How coordinates are assigned along a grid axis.
#[derive(Clone, Copy, Debug)]
pub enum AxisCoords {
    /// `t` itself (the paper's integer pixel indices).
    Integer,
    /// Pixel centres in (0, 1): `(t + 0.5) / len`, so a model renders at any resolution.
    Unit,
    /// `(t + offset) · scale`: integer coordinates of another grid resampled onto this one
    /// (rendering a pixel-coordinate model at a new size).
    Affine { scale: f64, offset: f64 },
}

/// Specification of a grid's Fourier features: all that is needed to regenerate them.
#[derive(Clone, Debug)]
pub struct FourierSpec {
    pub d: usize,
    pub seed: u64,
    /// Standard deviation of B per axis.
    pub sigma: Vec<f64>,
    pub coords: Vec<AxisCoords>,
    /// Set one frequency to zero so that a constant feature `cos 0 = 1` exists (ARCHITECTURE.md, "Images").
    pub constant_feature: bool,
    /// Frequencies chosen for the image (row-major, one value per axis), which replace the
    /// last rows of the seed's draw (ARCHITECTURE.md, "Images": frequencies from the
    /// spectrum). Empty: every frequency is drawn from the seed.
    pub given: Vec<f32>,
}

impl FourierSpec {
    /// `B` ((d/2) × axes): drawn from the seed, the last rows replaced by the given ones.
    pub fn frequencies(&self) -> Vec<f64> {
        let half = self.d / 2;
        let k = self.sigma.len();
        let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed);
        let std = Normal::new(0.0, 1.0).expect("unit normal");
        let mut b = vec![0.0; half * k];
        for f in 0..half {
            for a in 0..k {
                b[f * k + a] = std.sample(&mut rng) * self.sigma[a];
            }
        }
        // `check_features` keeps the given rows clear of the constant feature's row 0.
        let start = (half * k).saturating_sub(self.given.len());
        for (b, &g) in b[start..].iter_mut().zip(&self.given) {
            *b = g as f64;
        }
        if self.constant_feature && half > 0 {
            b[..k].fill(0.0);
        }
        b
    }

    /// The feature count must be even (sin and cos pairs) and at least 2.
    pub fn check_features(&self) -> Result<()> {
        check_feature_count(self.d)?;
        let k = self.sigma.len().max(1);
        let room = self.d / 2 - usize::from(self.constant_feature);
        if self.given.len() % k != 0 || self.given.len() / k > room {
            return Err(Error::invalid(
                Param::Inputs,
                format!(
                    "{} given frequency values are not whole rows of {k} axes within the {room} \
                     rows that {} features leave",
                    self.given.len(),
                    self.d
                ),
            ));
        }
        if let Some(g) = self.given.iter().find(|g| !g.is_finite()) {
            return Err(Error::invalid(
                Param::Inputs,
                format!("a given frequency is {g}, not a finite number"),
            ));
        }
        Ok(())
    }

    /// Builds the features for a grid with the given axis lengths; `coord_len[a]` is the length
    /// that unit coordinates are normalised by (the render size may differ from the fit size).
    pub fn grid(&self, axes: &[usize]) -> Result<GridFourier> {
        self.check_features()?;
        if axes.len() != self.sigma.len() || axes.len() != self.coords.len() {
            return Err(Error::invalid(
                Param::Sigma,
                "one sigma and coordinate kind per axis",
            ));
        }
        let half = self.d / 2;
        let k = axes.len();
        let b = self.frequencies();
        let phases = (0..k)
            .map(|a| {
                let len = axes[a];
                let mut table = vec![0f32; half * len];
                for f in 0..half {
                    for t in 0..len {
                        let c = match self.coords[a] {
                            AxisCoords::Integer => t as f64,
                            AxisCoords::Unit => (t as f64 + 0.5) / len as f64,
                            AxisCoords::Affine { scale, offset } => (t as f64 + offset) * scale,
                        };
                        let p = b[f * k + a] * c;
                        table[f * len + t] = (p - p.floor()) as f32;
                    }
                }
                table
            })
            .collect();
        Ok(GridFourier {
            axes: axes.to_vec(),
            phases,
        })
    }
}

impl GridFourier {
    pub fn n(&self) -> usize {
        self.axes.iter().product()
    }

    pub fn half(&self) -> usize {
        self.phases[0].len() / self.axes[0]
    }

    /// Phase of frequency `f` at sample `i`, in [0, 1).
    #[inline]
    pub fn phase(&self, i: usize, f: usize) -> f32 {
        let mut rest = i;
        let mut sum = 0f32;
        for a in (0..self.axes.len()).rev() {
            let len = self.axes[a];
            let t = rest % len;
            rest /= len;
            sum += self.phases[a][f * len + t];
        }
        sum - sum.floor()
    }

    /// Fills the `d` features of sample `i`.
    pub fn fill_row(&self, i: usize, out: &mut [f32]) {
        let half = self.half();
        let mut t = [0usize; 4];
        let mut rest = i;
        for a in (0..self.axes.len()).rev() {
            t[a] = rest % self.axes[a];
            rest /= self.axes[a];
        }
        for f in 0..half {
            let mut sum = 0f32;
            for (a, &ta) in t.iter().enumerate().take(self.axes.len()) {
                sum += self.phases[a][f * self.axes[a] + ta];
            }
            let (s, c) = (std::f32::consts::TAU * (sum - sum.floor())).sin_cos();
            out[f] = s;
            out[half + f] = c;
        }
    }

    pub fn bytes(&self) -> usize {
        self.phases.iter().map(|p| p.len() * 4).sum()
    }
}

/// Where the features come from.
#[derive(Clone, Debug)]
pub enum Features {
    /// Row-major `n×d` matrix in memory.
    Dense(Vec<f32>),
    /// Fourier features of a grid, generated on the fly.
    Grid(GridFourier),
}

/// One sensing problem: `n` samples, `d` features, `m` neurons, targets and gate rule.
#[derive(Clone, Debug)]
pub struct Problem {
    pub n: usize,
    pub d: usize,
    pub m: usize,
    pub features: Features,
    pub y: Vec<f32>,
    pub gates: GateMode,
    pub gate_seed: u64,
}

impl Problem {
    pub fn new(
        d: usize,
        m: usize,
        features: Features,
        y: Vec<f32>,
        gates: GateMode,
        gate_seed: u64,
    ) -> Result<Self> {
        let n = y.len();
        let p = Problem {
            n,
            d,
            m,
            features,
            y,
            gates,
            gate_seed,
        };
        p.validate()?;
        Ok(p)
    }

    pub fn validate(&self) -> Result<()> {
        check_sizes(self.n, self.d, self.m)?;
        match &self.features {
            Features::Dense(x) => {
                if x.len() != self.n * self.d {
                    return Err(Error::invalid(Param::Inputs, "feature matrix is not n×d"));
                }
                check_finite("features", x)?;
            }
            Features::Grid(g) => {
                if g.n() != self.n || 2 * g.half() != self.d {
                    return Err(Error::invalid(
                        Param::Inputs,
                        "grid features do not match n and d",
                    ));
                }
            }
        }
        if self.gates == GateMode::Gaussian && self.m != 1 {
            return Err(Error::invalid(
                Param::Gates,
                "gaussian sensing uses a single neuron block",
            ));
        }
        check_finite("targets", &self.y)
    }

    /// `m·d`, the length of the signal.
    pub fn signal_len(&self) -> usize {
        self.m * self.d
    }

    /// Checks a sparsity level against the problem.
    pub fn check_nonzeros(&self, s: usize) -> Result<()> {
        check_nonzeros(s, self.m, self.d)
    }

    /// Fills the `d` features of sample `i`.
    #[inline]
    pub fn fill_row(&self, i: usize, out: &mut [f32]) {
        match &self.features {
            Features::Dense(x) => out.copy_from_slice(&x[i * self.d..(i + 1) * self.d]),
            Features::Grid(g) => g.fill_row(i, out),
        }
    }

    /// Bytes the problem's own data holds (features, targets).
    pub fn data_bytes(&self) -> usize {
        4 * self.y.len()
            + match &self.features {
                Features::Dense(x) => 4 * x.len(),
                Features::Grid(g) => g.bytes(),
            }
    }
}

/// `1 ≤ s ≤ m·d`: the nonzeros a network of `m` neurons on `d` inputs can hold. (Whether
/// `m·d` fits the index space is [`check_index_space`]'s to say.)
pub fn check_nonzeros(s: usize, m: usize, d: usize) -> Result<()> {
    let md = m.saturating_mul(d);
    if s == 0 || s > md {
        return Err(Error::invalid(
            Param::Nonzeros,
            format!("s = {s} is out of range: it must be between 1 and m·d = {md}"),
        ));
    }
    Ok(())
}

/// The Fourier feature count must be even (sin and cos pairs) and at least 2.
pub fn check_feature_count(d: usize) -> Result<()> {
    if d < 2 || d % 2 != 0 {
        return Err(Error::invalid(
            Param::Inputs,
            format!(
                "{d} Fourier features: the count must be even and at least 2 (sin and cos pairs)"
            ),
        ));
    }
    Ok(())
}

/// Checks the shape of a problem before anything of that size is built: at least one sample,
/// feature and neuron, and `m·d` within the 32-bit index space of the sparse weights.
pub fn check_sizes(n: usize, d: usize, m: usize) -> Result<()> {
    if n == 0 {
        return Err(Error::invalid(
            Param::Samples,
            "the problem has no samples (n = 0)",
        ));
    }
    if d == 0 {
        return Err(Error::invalid(
            Param::Inputs,
            "the problem has no features (d = 0)",
        ));
    }
    if m == 0 {
        return Err(Error::invalid(
            Param::Neurons,
            "the network needs at least one neuron",
        ));
    }
    check_index_space(m, d)
}

/// `m·d` within the 32-bit index space of the sparse weights (computed without overflow, so
/// that absurd sizes are named as they are).
pub fn check_index_space(m: usize, d: usize) -> Result<()> {
    let md = m as u128 * d as u128;
    if md > u32::MAX as u128 {
        return Err(Error::invalid(
            Param::Neurons,
            format!("m·d = {md} exceeds the 32-bit index space; use fewer neurons or features"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_beyond_the_index_space_are_named_without_overflow() {
        assert!(check_index_space(65536, 65535).is_ok());
        // 2^32 · 2^32 wraps to 0 in 64 bits: it must still be refused, with its true size.
        let e = check_index_space(1 << 32, 1 << 32).unwrap_err().to_string();
        assert!(e.contains("18446744073709551616"), "{e}");
        assert!(check_sizes(1, 1 << 32, 1 << 32).is_err());
        let e = check_nonzeros(5, usize::MAX, 2).err();
        assert!(e.is_none(), "s = 5 fits whatever m·d saturates to");
        assert!(check_nonzeros(0, 3, 4).is_err() && check_nonzeros(13, 3, 4).is_err());
    }

    fn spec(given: Vec<f32>) -> FourierSpec {
        FourierSpec {
            d: 8,
            seed: 5,
            sigma: vec![3.0, 2.0],
            coords: vec![AxisCoords::Unit, AxisCoords::Unit],
            constant_feature: true,
            given,
        }
    }

    #[test]
    fn given_frequencies_replace_the_last_rows_of_the_draw() {
        let drawn = spec(Vec::new()).frequencies();
        let b = spec(vec![1.5, -2.0, 0.5, 4.0]).frequencies();
        // Row 0 is the constant feature's, row 1 the seed's, rows 2 and 3 the given ones.
        assert_eq!(&b[..4], &drawn[..4]);
        assert_eq!(&b[..2], &[0.0, 0.0]);
        assert_eq!(&b[4..], &[1.5, -2.0, 0.5, 4.0]);
        // Three rows fit beside the constant feature; four, half a row or NaN do not.
        assert!(spec(vec![1.0; 6]).check_features().is_ok());
        for bad in [vec![1.0; 8], vec![1.0; 3], vec![f32::NAN, 1.0]] {
            let e = spec(bad).check_features().unwrap_err().to_string();
            assert!(e.contains("frequen"), "{e}");
        }
    }
}
