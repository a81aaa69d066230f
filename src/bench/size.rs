//! Benchmark problem sizes and the INR-shaped problem they build.

use crate::backend::{Backend, GateSource, Slot};
use crate::error::{Error, Result};
use crate::problem::{AxisCoords, Features, FourierSpec, GateMode, Problem};
use crate::sparse::SparseVec;
use rand::SeedableRng;
use std::sync::Arc;

/// A benchmark problem size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BenchSize {
    pub n: usize,
    pub d: usize,
    pub m: usize,
    pub s: usize,
}

impl BenchSize {
    /// INR of a 28×28 digit with the paper's settings.
    pub const SMALL: BenchSize = BenchSize {
        n: 784,
        d: 1500,
        m: 200,
        s: 1000,
    };
    /// A 512×512 image.
    pub const LARGE: BenchSize = BenchSize {
        n: 262_144,
        d: 512,
        m: 2048,
        s: 20_000,
    };

    /// `small`, `large` or `N,D,M,S`.
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "small" => Ok(Self::SMALL),
            "large" => Ok(Self::LARGE),
            _ => {
                let v: Vec<usize> = text
                    .split(',')
                    .map(|p| p.trim().parse::<usize>())
                    .collect::<std::result::Result<_, _>>()
                    .map_err(|_| {
                        Error::arg("--size", format!("'{text}' is not small, large or N,D,M,S"))
                    })?;
                if v.len() != 4 {
                    return Err(Error::arg(
                        "--size",
                        format!("'{text}' is not small, large or N,D,M,S"),
                    ));
                }
                let s = BenchSize {
                    n: v[0],
                    d: v[1],
                    m: v[2],
                    s: v[3],
                };
                if s.n == 0 || s.d < 2 || s.d % 2 != 0 || s.m == 0 || s.s == 0 || s.s > s.m * s.d {
                    return Err(Error::arg(
                        "--size",
                        "need N ≥ 1, even D ≥ 2, M ≥ 1 and 1 ≤ S ≤ M·D",
                    ));
                }
                Ok(s)
            }
        }
    }
}

/// An INR-shaped problem in the steady state of a sequential fit: Fourier features of a grid,
/// a smooth target, and `s` random weights that also serve as the gates.
pub struct BenchProblem {
    pub size: BenchSize,
    pub problem: Arc<Problem>,
    pub w: SparseVec,
}

impl BenchProblem {
    pub fn new(size: BenchSize) -> Result<Self> {
        // A square grid when n is a square, otherwise one axis of n samples.
        let side = (size.n as f64).sqrt().round() as usize;
        let axes = if side * side == size.n {
            vec![side, side]
        } else {
            vec![size.n]
        };
        let spec = FourierSpec {
            d: size.d,
            seed: 1,
            sigma: vec![10.0; axes.len()],
            coords: vec![AxisCoords::Unit; axes.len()],
            constant_feature: true,
            given: Vec::new(),
        };
        let grid = spec.grid(&axes)?;
        let y: Vec<f32> = (0..size.n)
            .map(|i| 0.5 + 0.4 * ((i as f32) * 0.013).sin() * ((i as f32) * 0.0007).cos())
            .collect();
        let problem = Arc::new(Problem::new(
            size.d,
            size.m,
            Features::Grid(grid),
            y,
            GateMode::Sequential,
            2,
        )?);
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let idx = rand::seq::index::sample(&mut rng, size.m * size.d, size.s);
        let w = SparseVec::from_pairs(
            idx.into_iter()
                .map(|i| {
                    (
                        i as u32,
                        rand_distr::Distribution::sample(&rand_distr::StandardNormal, &mut rng),
                    )
                })
                .map(|(i, v): (u32, f32)| (i, v * 0.05))
                .collect(),
        );
        Ok(Self { size, problem, w })
    }

    /// Loads `w` into `W` and as the gates (as the sequential driver does after each step),
    /// and makes its residual current.
    pub fn prepare(&self, b: &mut dyn Backend) -> Result<()> {
        b.set_batch(None)?;
        b.load(Slot::W, &self.w)?;
        b.set_gates(GateSource::Slot(Slot::W))?;
        b.forward(Slot::W)?;
        Ok(())
    }

    /// Neurons with at least one weight (those the dense pass visits).
    pub fn active_neurons(&self) -> usize {
        self.w.active_neurons(self.size.d)
    }
}
