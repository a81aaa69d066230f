//! Iterative magnitude pruning (IMP): the paper's baseline, which IHT is compared against.
//!
//! The network is the dense two-layer MLP without bias `f(x) = Vᵀ relu(U x)` (`U` `m×d`,
//! `V` `m×C`), initialised as PyTorch's `nn.Linear(bias=False)` (uniform in `±1/√fan_in`:
//! `1/√d` for `U`, `1/√m` for `V`) from a seeded `StdRng` (`U` row-major first, then `V`).
//! It sees the same features as IHT (`Problem::fill_row`) and is trained by Adam
//! ([`adam`]) on MSE or softmax cross-entropy ([`mlp`]).
//!
//! One IMP run ([`fit()`]):
//! 1. round 0 trains every weight (`m·d + m·C`) for `epochs` epochs (the shared epoch loop
//!    [`crate::train::run`], full batch or seeded minibatches), Adam's moments starting at 0;
//! 2. the round is reported (`on_round`: its weights, count, final training loss); if at most
//!    `s` weights are alive, or the callback says `Break`, the run ends with this round;
//! 3. otherwise `⌈10%⌉` of the alive weights are pruned by global magnitude over `U` and `V`
//!    together ([`prune`]), the survivors are rewound to their *initial* values, and the next
//!    round trains them from fresh Adam moments.
//!
//! The result for `s` is the first round with at most `s` weights, trained like every other.
//! Since every round is reported, one run serves a whole grid of `s` at the same `(m, seed)`.
//!
//! A full-batch epoch costs one forward-backward pass: the loss the epoch loop evaluates
//! after an update comes from the pass that also gives the next update's gradient.
//!
//! Memory is honestly `O(m·d + batch·m)`: weights, gradients, two Adam moments, the mask and
//! (on the host) the initial values, plus per-block scratch — what IHT, linear in `s`, avoids.
//! The compute runs behind [`mlp::DenseMlp`] on the CPU ([`cpu`]) or the GPU ([`gpu`],
//! `shaders/mlp.wgsl`).

pub mod adam;
pub mod cpu;
mod fit;
pub mod gpu;
pub mod mlp;
pub mod prune;
#[cfg(test)]
mod tests;

pub use fit::{fit, fit_from, fit_observed, init_weights, ImpEpoch, ImpResume};
pub use mlp::{DenseMlp, MlpData, MlpShape, Targets};

use crate::backend::gpu::GpuContext;
use crate::backend::{BackendChoice, BackendInfo};
use crate::error::{Error, Param, Result};
use crate::problem::Features;
use crate::sparse::SparseVec;
use std::sync::Arc;

/// Grid features are materialised for IMP when they take at most this many bytes.
pub const DEFAULT_FEATURE_BUDGET: usize = 1 << 30;

/// What the network's outputs are fitted with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ImpLoss {
    /// Mean squared error, one output (`problem.y` are the targets).
    #[default]
    Mse,
    /// Softmax cross-entropy over `classes` outputs (`problem.y` holds integer labels).
    CrossEntropy { classes: usize },
}

impl ImpLoss {
    /// Outputs `C` of the network.
    pub fn outputs(self) -> usize {
        match self {
            ImpLoss::Mse => 1,
            ImpLoss::CrossEntropy { classes } => classes,
        }
    }

    /// The targets of a problem's `y`.
    pub fn targets(self, y: &[f32]) -> Result<Targets> {
        match self {
            ImpLoss::Mse => Ok(Targets::Values(y.to_vec())),
            ImpLoss::CrossEntropy { classes } => y
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    if v >= 0.0 && v.fract() == 0.0 && (v as usize) < classes {
                        Ok(v as u32)
                    } else {
                        Err(Error::invalid(
                            Param::Outputs,
                            format!("target {v} of sample {i} is not a label in 0..{classes}"),
                        ))
                    }
                })
                .collect::<Result<Vec<u32>>>()
                .map(Targets::Labels),
        }
    }
}

/// What an IMP run is asked to do.
#[derive(Clone, Debug, PartialEq)]
pub struct ImpOptions {
    /// Hidden neurons `m`.
    pub neurons: usize,
    /// Target number of weights `s` (of `U` and `V` together): the run ends at the first round
    /// with at most `s`.
    pub nonzeros: usize,
    /// Epochs per round.
    pub epochs: usize,
    /// Samples per Adam step; `None` = full batch.
    pub batch_size: Option<usize>,
    /// Adam's learning rate.
    pub lr: f32,
    /// Seed of the initial weights and the minibatch order (round `r` shuffles from
    /// `seed + r`).
    pub seed: u64,
    /// Share of the alive weights pruned per round (rounded up).
    pub prune_fraction: f64,
    pub loss: ImpLoss,
    /// Grid features are materialised when they take at most this many bytes (else
    /// generated per block).
    pub feature_budget: usize,
}

impl Default for ImpOptions {
    fn default() -> Self {
        ImpOptions {
            neurons: 50,
            nonzeros: 1000,
            epochs: 100,
            batch_size: None,
            lr: adam::DEFAULT_LR,
            seed: 0,
            prune_fraction: 0.1,
            loss: ImpLoss::Mse,
            feature_budget: DEFAULT_FEATURE_BUDGET,
        }
    }
}

/// Where the network is trained.
#[derive(Clone, Debug)]
pub enum ImpDevice {
    Cpu,
    Gpu(Arc<GpuContext>),
}

impl ImpDevice {
    /// The device for a backend choice: `auto` takes a hardware GPU if there is one.
    pub fn from_choice(choice: BackendChoice, adapter: Option<&str>) -> Result<ImpDevice> {
        match choice {
            BackendChoice::Cpu => Ok(ImpDevice::Cpu),
            BackendChoice::Gpu => Ok(ImpDevice::Gpu(GpuContext::new(adapter, false)?)),
            BackendChoice::Auto => Ok(GpuContext::new(adapter, true)
                .map(ImpDevice::Gpu)
                .unwrap_or(ImpDevice::Cpu)),
        }
    }

    /// What runs the network, for reports.
    pub fn info(&self) -> BackendInfo {
        match self {
            ImpDevice::Cpu => BackendInfo {
                kind: "cpu",
                adapter: format!("CPU ({} threads)", rayon::current_num_threads()),
            },
            ImpDevice::Gpu(ctx) => BackendInfo {
                kind: "gpu",
                adapter: ctx.adapter_name(),
            },
        }
    }

    /// A network of `m` neurons and `c` outputs on `data`, on this device.
    pub fn mlp<'a>(
        &self,
        data: MlpData<'a>,
        m: usize,
        c: usize,
        feature_budget: usize,
    ) -> Result<Box<dyn DenseMlp + 'a>> {
        Ok(match self {
            ImpDevice::Cpu => Box::new(cpu::CpuMlp::new(data, m, c, feature_budget)?),
            ImpDevice::Gpu(ctx) => {
                Box::new(gpu::GpuMlp::new(ctx.clone(), data, m, c, feature_budget)?)
            }
        })
    }
}

/// One trained round, as the `on_round` callback sees it.
#[derive(Clone, Copy, Debug)]
pub struct RoundReport<'r> {
    /// 0 for the dense network.
    pub round: usize,
    /// Alive weights of `U` and `V` together.
    pub nonzeros: usize,
    /// Mean training loss (PyTorch's convention) after the round's last epoch.
    pub loss: f64,
    pub epochs: usize,
    /// Wall time of the round.
    pub seconds: f64,
    /// Epochs and wall time of the run so far, this round included: what reaching this
    /// round's size cost.
    pub run_epochs: usize,
    pub run_seconds: f64,
    /// Peak bytes so far (as [`ImpResult::peak_device_bytes`]).
    pub peak_device_bytes: u64,
    pub shape: MlpShape,
    /// The trained `U` (`m×d`), pruned entries zero.
    pub u: &'r [f32],
    /// The trained `V` (`m×C`), pruned entries zero.
    pub v: &'r [f32],
}

impl RoundReport<'_> {
    /// The round's network as a model that predicts and saves.
    pub fn model(&self) -> ImpModel {
        ImpModel::from_dense(self.shape.d, self.shape.m, self.shape.c, self.u, self.v)
    }
}

/// One round of a finished run.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoundSummary {
    pub round: usize,
    pub nonzeros: usize,
    pub loss: f64,
    pub epochs: usize,
    pub seconds: f64,
}

/// What a run produced: the last round's network.
#[derive(Clone, Debug)]
pub struct ImpResult {
    pub model: ImpModel,
    /// Alive weights of the last round.
    pub nonzeros: usize,
    /// Its mean training loss.
    pub loss: f64,
    pub rounds: Vec<RoundSummary>,
    /// Whether a callback stopped the run before it reached `s`.
    pub stopped: bool,
    /// Epochs over all rounds.
    pub epochs: usize,
    pub seconds: f64,
    /// Peak bytes of the network on its device (on the CPU also the host's initial weights,
    /// masks and the round's read-back weights).
    pub peak_device_bytes: u64,
    pub backend: BackendInfo,
}

/// A pruned network: `U` sparse (IHT's layout: flat `j·d + k`), `V` dense `m×C`.
#[derive(Clone, Debug, PartialEq)]
pub struct ImpModel {
    pub d: usize,
    pub m: usize,
    pub c: usize,
    pub u: SparseVec,
    pub v: Vec<f32>,
}

impl ImpModel {
    /// From dense `U` (`m×d`) and `V` (`m×C`): `U`'s nonzero entries are kept.
    pub fn from_dense(d: usize, m: usize, c: usize, u: &[f32], v: &[f32]) -> ImpModel {
        let pairs = u
            .iter()
            .enumerate()
            .filter(|(_, &w)| w != 0.0)
            .map(|(i, &w)| (i as u32, w))
            .collect();
        ImpModel {
            d,
            m,
            c,
            u: SparseVec::from_pairs(pairs),
            v: v.to_vec(),
        }
    }

    /// Nonzero weights of `U` and `V`.
    pub fn nonzeros(&self) -> usize {
        self.u.len() + self.v.iter().filter(|&&w| w != 0.0).count()
    }

    /// `V` holds `m·C` entries and every index of `U` is below `m·d`.
    pub fn check(&self) -> Result<()> {
        if self.v.len() != self.m * self.c || self.c == 0 {
            return Err(Error::invalid(
                Param::Model,
                format!(
                    "V has {} entries, not m·C = {}·{}",
                    self.v.len(),
                    self.m,
                    self.c
                ),
            ));
        }
        let md = (self.m * self.d) as u64;
        if self.u.indices.iter().any(|&i| i as u64 >= md) {
            return Err(Error::invalid(
                Param::Model,
                "an index of U is out of range",
            ));
        }
        Ok(())
    }

    /// Outputs `n×C` on `features` (`n` samples of `d`), on `device`.
    pub fn predict(&self, features: &Features, n: usize, device: &ImpDevice) -> Result<Vec<f32>> {
        self.check()?;
        let targets = Targets::None;
        let data = MlpData {
            features,
            n,
            d: self.d,
            targets: &targets,
        };
        let mut mlp = device.mlp(data, self.m, self.c, DEFAULT_FEATURE_BUDGET)?;
        mlp.set_weights(&self.u.to_dense(self.m * self.d), &self.v)?;
        mlp.predict(None)
    }
}
