//! The paper's planted experiments (ARCHITECTURE.md, "Planted networks"): plant a sparse `w*`, sense it, recover it.

use crate::backend::{cpu::CpuBackend, Backend, GateSource, Slot};
use crate::error::Result;
use crate::iht::{EpochReport, FitResult, Gating, IhtConfig};
use crate::metrics;
use crate::problem::{Features, GateMode, Problem};
use crate::sparse::SparseVec;
use rand::seq::index::sample;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use std::ops::ControlFlow;
use std::sync::Arc;

pub mod vector;

/// Epochs of `spinr plant` (it stops earlier once the fit is exact or stalls).
pub const DEFAULT_ITERS: usize = 100;

/// Fresh samples drawn for the test PSNR.
pub const TEST_SAMPLES: usize = 1000;

#[derive(Clone, Debug)]
pub struct PlantSpec {
    pub gates: GateMode,
    /// Input dimension `d`.
    pub inputs: usize,
    /// Neurons `m`.
    pub neurons: usize,
    /// Nonzeros `s` of the planted weights.
    pub nonzeros: usize,
    /// Training samples `n`.
    pub samples: usize,
    pub seed: u64,
}

/// A planted instance: training and test problems sharing `w*` and the gates.
pub struct Planted {
    pub train: Arc<Problem>,
    pub test: Arc<Problem>,
    pub w_star: SparseVec,
}

impl PlantSpec {
    /// Block layout used internally: Gaussian sensing is one block of length `m·d`.
    fn layout(&self) -> (usize, usize) {
        match self.gates {
            GateMode::Gaussian => (self.inputs * self.neurons, 1),
            _ => (self.inputs, self.neurons),
        }
    }

    pub fn build(&self) -> Result<Planted> {
        let (d, m) = self.layout();
        let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed);
        let gate_seed = self.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xa076_1d64_78bd_642f;
        let gauss = |rng: &mut rand::rngs::StdRng, len: usize| -> Vec<f32> {
            (0..len).map(|_| StandardNormal.sample(rng)).collect()
        };
        // Validate sizes before drawing anything large.
        let probe = Problem::new(
            d,
            m,
            Features::Dense(vec![0.0; d]),
            vec![0.0],
            self.gates,
            gate_seed,
        )?;
        if self.samples == 0 {
            return Err(crate::error::Error::invalid(
                crate::error::Param::Samples,
                "need at least one sample",
            ));
        }
        probe.check_nonzeros(self.nonzeros)?;
        let positions = sample(&mut rng, m * d, self.nonzeros);
        let w_star = SparseVec::from_pairs(
            positions
                .into_iter()
                .map(|p| (p as u32, StandardNormal.sample(&mut rng)))
                .collect(),
        );
        let x_train = gauss(&mut rng, self.samples * d);
        let x_test = gauss(&mut rng, TEST_SAMPLES * d);
        let make = |x: Vec<f32>, n: usize| -> Result<Arc<Problem>> {
            let p = Problem::new(
                d,
                m,
                Features::Dense(x),
                vec![0.0; n],
                self.gates,
                gate_seed,
            )?;
            let y = evaluate(Arc::new(p.clone()), &w_star, self.gating())?;
            Ok(Arc::new(Problem { y, ..p }))
        };
        Ok(Planted {
            train: make(x_train, self.samples)?,
            test: make(x_test, TEST_SAMPLES)?,
            w_star,
        })
    }

    /// How the planted network gates: convex with the random gates, sequential as a ReLU net.
    pub fn gating(&self) -> Gating {
        match self.gates {
            GateMode::Sequential => Gating::SelfGated,
            _ => Gating::Random,
        }
    }
}

/// Predictions `A w` of a model with the given gating (on the CPU).
pub fn evaluate(problem: Arc<Problem>, w: &SparseVec, gating: Gating) -> Result<Vec<f32>> {
    let s = w.len().max(1).min(problem.signal_len());
    let mut b = CpuBackend::new(problem, s, 0)?;
    b.load(Slot::W, w)?;
    if gating == Gating::SelfGated {
        b.set_gates(GateSource::Slot(Slot::W))?;
    }
    b.predict(Slot::W)
}

/// What `spinr plant --json` prints.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlantReport {
    pub method: crate::inr::fit::Method,
    pub variant: crate::iht::Variant,
    pub gates: GateMode,
    pub backend: String,
    pub adapter: String,
    pub inputs: usize,
    pub neurons: usize,
    pub nonzeros: usize,
    pub samples: usize,
    /// Outputs `C` of the planted network (1: the scalar network of Fig. 1).
    #[serde(default = "one")]
    pub outputs: usize,
    pub seed: u64,
    pub recovered: bool,
    pub relative_error: f64,
    pub support_errors: usize,
    pub train_psnr: f64,
    pub test_psnr: f64,
    pub iterations: usize,
    pub seconds: f64,
    /// The backend's (IHT) or the dense network's (IMP) peak working memory.
    pub peak_device_bytes: u64,
}

fn one() -> usize {
    1
}

/// Scores a fit against the planted truth: `w_fused` are the fitted fused weights (IHT's `w`,
/// or IMP's `|v_j|·u_j`), `train_pred` and `test_pred` the fitted network's predictions.
#[allow(clippy::too_many_arguments)]
pub fn score(
    spec: &PlantSpec,
    planted: &Planted,
    w_fused: &SparseVec,
    train_pred: &[f32],
    test_pred: &[f32],
    iterations: usize,
    backend: &str,
    adapter: &str,
    seconds: f64,
) -> Result<PlantReport> {
    let (d, m) = spec.layout();
    let w_hat = if spec.gates == GateMode::Sequential {
        metrics::match_neurons(w_fused, &planted.w_star, m, d)
    } else {
        w_fused.clone()
    };
    // Entries that are exactly zero are not part of a support.
    let nz = |v: &SparseVec| {
        SparseVec::from_pairs(
            v.indices
                .iter()
                .zip(&v.values)
                .filter(|(_, &x)| x != 0.0)
                .map(|(&i, &x)| (i, x))
                .collect(),
        )
    };
    let relative_error = (w_hat.dist2(&planted.w_star) / planted.w_star.norm2()).sqrt();
    let support_errors = nz(&w_hat).support_difference(&planted.w_star);
    let psnr =
        |pred: &[f32], y: &[f32]| metrics::psnr_from_mse(metrics::mse(pred, y), metrics::range(y));
    Ok(PlantReport {
        method: crate::inr::fit::Method::Iht,
        variant: crate::iht::Variant::Spinr,
        gates: spec.gates,
        backend: backend.to_string(),
        adapter: adapter.to_string(),
        inputs: spec.inputs,
        neurons: spec.neurons,
        nonzeros: spec.nonzeros,
        samples: spec.samples,
        outputs: 1,
        seed: spec.seed,
        recovered: relative_error < 1e-4 && support_errors == 0,
        relative_error,
        support_errors,
        train_psnr: psnr(train_pred, &planted.train.y),
        test_psnr: psnr(test_pred, &planted.test.y),
        iterations,
        seconds,
        peak_device_bytes: 0,
    })
}

/// Scores an IHT fit (its predictions on the CPU).
pub fn score_iht(
    spec: &PlantSpec,
    planted: &Planted,
    fit: &FitResult,
    backend: &str,
    adapter: &str,
    seconds: f64,
) -> Result<PlantReport> {
    let train_pred = evaluate(planted.train.clone(), &fit.w, fit.gating)?;
    let test_pred = evaluate(planted.test.clone(), &fit.w, fit.gating)?;
    score(
        spec,
        planted,
        &fit.w,
        &train_pred,
        &test_pred,
        fit.iterations,
        backend,
        adapter,
        seconds,
    )
}

/// Scores one IMP network: its fused weights `|v_j|·u_j` against `w*`, its predictions.
pub fn score_imp(
    spec: &PlantSpec,
    planted: &Planted,
    model: &crate::imp::ImpModel,
    iterations: usize,
    backend: &str,
    adapter: &str,
    seconds: f64,
) -> Result<PlantReport> {
    let cpu = crate::imp::ImpDevice::Cpu;
    let train_pred = model.predict(&planted.train.features, planted.train.n, &cpu)?;
    let test_pred = model.predict(&planted.test.features, planted.test.n, &cpu)?;
    let d = model.d;
    let fused = SparseVec {
        indices: model.u.indices.clone(),
        values: model
            .u
            .indices
            .iter()
            .zip(&model.u.values)
            .map(|(&i, &u)| model.v[i as usize / d].abs() * u)
            .collect(),
    };
    score(
        spec,
        planted,
        &fused,
        &train_pred,
        &test_pred,
        iterations,
        backend,
        adapter,
        seconds,
    )
}

/// IMP on a planted instance (sequential gates: the ReLU network it plants), `epochs` per round.
pub fn imp_options(
    spec: &PlantSpec,
    epochs: usize,
    batch_size: Option<usize>,
) -> crate::imp::ImpOptions {
    crate::imp::ImpOptions {
        neurons: spec.neurons,
        nonzeros: spec.nonzeros,
        epochs,
        batch_size,
        seed: spec.seed,
        ..Default::default()
    }
}

/// IMP on a planted instance (sequential gates: the ReLU network it plants), `epochs` per
/// round, scored like IHT; `nonzeros` in the report is what IMP kept. `on_round` sees every
/// round (`Break` stops).
pub fn run_imp(
    spec: &PlantSpec,
    planted: &Planted,
    epochs: usize,
    batch_size: Option<usize>,
    device: &crate::imp::ImpDevice,
    on_round: impl FnMut(&crate::imp::RoundReport) -> ControlFlow<()>,
) -> Result<PlantReport> {
    run_imp_from(
        spec,
        planted,
        epochs,
        batch_size,
        device,
        None,
        on_round,
        |_| Ok(()),
    )
}

/// [`run_imp`] from a round boundary of an earlier run (`resume`), `on_boundary` seeing each
/// boundary (checkpoints).
#[allow(clippy::too_many_arguments)]
pub fn run_imp_from(
    spec: &PlantSpec,
    planted: &Planted,
    epochs: usize,
    batch_size: Option<usize>,
    device: &crate::imp::ImpDevice,
    resume: Option<crate::imp::ImpResume>,
    on_round: impl FnMut(&crate::imp::RoundReport) -> ControlFlow<()>,
    on_boundary: impl FnMut(&crate::imp::ImpResume) -> Result<()>,
) -> Result<PlantReport> {
    if spec.gates != GateMode::Sequential {
        return Err(crate::error::Error::invalid(
            crate::error::Param::Gates,
            "IMP trains the ReLU network itself: use --gates sequential",
        ));
    }
    let opts = imp_options(spec, epochs, batch_size);
    let r = crate::imp::fit_from(
        &planted.train,
        &opts,
        device,
        resume,
        |_| ControlFlow::Continue(()),
        on_round,
        on_boundary,
    )?;
    let mut report = score_imp(
        spec,
        planted,
        &r.model,
        r.epochs,
        r.backend.kind,
        &r.backend.adapter,
        r.seconds,
    )?;
    report.method = crate::inr::fit::Method::Imp;
    report.nonzeros = r.nonzeros;
    report.peak_device_bytes = r.peak_device_bytes;
    Ok(report)
}

/// Runs IHT on a planted instance with a given backend, stopping early once the fit is exact
/// to f32 precision or has stopped improving. `on_epoch` sees every epoch (progress output).
pub fn run(
    backend: &mut dyn Backend,
    planted: &Planted,
    cfg: &IhtConfig,
    on_epoch: impl FnMut(&EpochReport),
) -> Result<FitResult> {
    run_from(
        backend,
        planted,
        cfg,
        None,
        on_epoch,
        &mut crate::iht::NoCheckpoints,
    )
}

/// [`run`] from a checkpoint of the same instance and configuration (`resume`), saving through
/// `checkpoints`; `stopped` then means a checkpointer stopped it (an interrupt), never the
/// early stop of an exact or stalled fit.
pub fn run_from(
    backend: &mut dyn Backend,
    planted: &Planted,
    cfg: &IhtConfig,
    resume: Option<&crate::iht::Resume>,
    mut on_epoch: impl FnMut(&EpochReport),
    checkpoints: &mut dyn crate::iht::Checkpointer,
) -> Result<FitResult> {
    let y2: f64 = planted.train.y.iter().map(|&v| (v as f64).powi(2)).sum();
    // The stall test looks 20 epochs back: a resumed run sees the epochs before it too.
    let mut recent: Vec<f64> = resume.map_or_else(Vec::new, |r| r.at.history.clone());
    let mut stopped_early = false;
    let mut fit = crate::iht::fit_from(
        backend,
        Some(&planted.train),
        planted.train.n,
        cfg,
        resume,
        |r: &EpochReport| {
            on_epoch(r);
            recent.push(r.loss);
            let exact = r.loss <= 1e-14 * y2;
            let stalled = recent.len() > 20 && r.loss >= 0.999 * recent[recent.len() - 21];
            if exact || stalled {
                stopped_early = true;
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        },
        checkpoints,
        None,
    )?;
    // An early stop is not an interrupt: the polish still runs.
    if stopped_early
        && cfg.polish > 0
        && fit.gating == Gating::SelfGated
        && cfg.batch_size.is_none()
    {
        fit.loss = crate::iht::polish(backend, cfg, fit.loss, None)?;
        fit.w = backend.read(Slot::BEST)?;
    }
    fit.stopped &= !stopped_early;
    Ok(fit)
}
