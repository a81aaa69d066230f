//! What a fit may choose about its IHT steps, and the defaults of each variant and task: the
//! one place a default changes (README, "Choosing the defaults", says why each is what it is).

use crate::error::{Error, Param, Result};
use crate::problem::GateMode;

/// How the very first step (empty support) chooses its step size.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum FirstStep {
    /// The paper's `μ = 1e-14`: the first step only picks a support.
    Paper,
    /// Normalised step size on the support of the `s` largest gradient entries.
    Normalized,
}

/// How the refinement steps choose their step size.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Refine {
    /// Normalised step size `‖g‖²/‖A g‖²` at every inner step (exact line search), Armijo as a
    /// safeguard. Converges faster per step; spinr's default where the gates are fixed.
    Exact,
    /// The paper's code: the normalised step once, then only halved by Armijo backtracking.
    Armijo,
    /// Conjugate gradients on the support (gates fixed): the exact step along a direction
    /// that keeps what earlier steps gained; restarts from the gradient when a step fails.
    Cg,
}

/// Whose defaults fill the choices a user leaves open.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// spinr's defaults, chosen by sweeps over planted networks, the digit grid and photos.
    #[default]
    Spinr,
    /// The paper's code: Armijo refinement, no constant feature, `μ = 1e-14` first step,
    /// `K = 10` refinement steps (3 for Gaussian sensing).
    Paper,
}

impl Variant {
    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Spinr => "spinr",
            Variant::Paper => "paper",
        }
    }
}

/// What a fit is of: the defaults may differ by task, each chosen by measurement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    /// An image (sparse INR).
    Image,
    /// A planted network.
    Planted,
    /// A classifier with one output (binary labels, least squares).
    Classify,
}

/// The IHT choices a caller may leave to the variant (`None` = the variant's default).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IhtChoices {
    pub inner: Option<usize>,
    pub refine: Option<Refine>,
    pub first_step: Option<FirstStep>,
    pub rescue: Option<bool>,
    pub polish: Option<usize>,
    /// Momentum β of minibatch updates ([`IhtConfig::momentum`]).
    #[serde(default)]
    pub momentum: Option<f32>,
    /// Candidates per update as a multiple of `s` ([`IhtConfig::candidates`]).
    #[serde(default)]
    pub candidates: Option<f32>,
    /// The share of `s` the support starts from ([`IhtConfig::grow_from`]).
    #[serde(default)]
    pub grow_from: Option<f32>,
}

impl IhtChoices {
    /// The configuration these choices give for `task` under `variant`.
    pub fn resolve(
        &self,
        variant: Variant,
        task: Task,
        s: usize,
        iters: usize,
        gates: GateMode,
    ) -> Result<IhtConfig> {
        let mut cfg = IhtConfig::new(s, iters, gates);
        // Armijo wherever the gates follow the weights: recomputing the step at every inner
        // step (`exact`) lost up to 37 dB of median PSNR on the digit grid and up to 113 dB on
        // the sequential planted grid; on photos the two are within 0.5 dB (README, "Choosing
        // the defaults").
        let inner = match (variant, task) {
            (Variant::Spinr, Task::Image) => DEFAULT_IMAGE_INNER,
            _ => cfg.inner,
        };
        cfg.inner = self.inner.unwrap_or(inner);
        // Fixed gates make the planted problem linear least squares, where the exact line
        // search is the optimal step: convex recovery at d = 40, m = 10, s = 20, n = 500 was
        // 8 of 8 seeds with `exact`, 7 of 8 with `armijo`.
        let linear = task == Task::Planted && gates != GateMode::Sequential;
        let refine = if linear && variant == Variant::Spinr {
            Refine::Exact
        } else {
            Refine::Armijo
        };
        cfg.refine = self.refine.unwrap_or(refine);
        cfg.first_step = self.first_step.unwrap_or(FirstStep::Paper);
        // Rescues lift the digit grid's collapsed draws; on planted networks they only cost
        // time.
        cfg.rescue = variant == Variant::Spinr && self.rescue.unwrap_or(task == Task::Image);
        let polish = if variant == Variant::Spinr && task == Task::Image {
            DEFAULT_POLISH
        } else {
            0
        };
        cfg.polish = self.polish.unwrap_or(polish);
        cfg.momentum = self.momentum.unwrap_or(0.0);
        if !(0.0..1.0).contains(&cfg.momentum) {
            return Err(Error::invalid(
                Param::Momentum,
                format!("β = {} must be in [0, 1)", cfg.momentum),
            ));
        }
        cfg.candidates = self.candidates.unwrap_or(1.0);
        check_candidates(cfg.candidates)?;
        cfg.grow_from = self.grow_from.unwrap_or(1.0);
        check_grow_from(cfg.grow_from)?;
        if cfg.inner == 0 {
            return Err(Error::invalid(
                Param::Inner,
                "at least one refinement step is needed",
            ));
        }
        if iters == 0 {
            return Err(Error::invalid(Param::Iters, "at least one epoch is needed"));
        }
        Ok(cfg)
    }
}

/// Polish rounds of spinr's full-batch image fits (`IhtConfig::polish`).
pub const DEFAULT_POLISH: usize = 3;
/// Polish rounds of minibatch image fits: the updates leave the values a few refinement steps
/// on a minibatch from the least-squares fit of their support; one full-batch round gains
/// 0.2–1.0 dB on the photos at 128² (median +0.47), two more about 0.1 more.
pub const DEFAULT_MINIBATCH_POLISH: usize = 1;
/// Polish rounds, at least, of image fits with DCT terms: each round also chooses the terms
/// again, so a second round has more to gain than a round of the network alone (README, "The
/// network and its terms, fitted together": the second round adds +0.42 dB at the median at
/// 128² with s = 10 000 and +0.01 to +0.07 at s ≤ 3000; fits take 1.01–1.09× 0.12.0's time).
pub const DEFAULT_TERMS_POLISH: usize = 2;

/// Momentum of spinr's minibatch image fits ([`IhtConfig::momentum`]) from
/// [`MOMENTUM_FROM_NONZEROS`] nonzeros on (README, "Momentum").
pub const DEFAULT_MINIBATCH_MOMENTUM: f32 = 0.3;
/// The fewest nonzeros at which spinr's minibatch image fits use momentum. Measured on eight
/// photos at 128²: β = 0.3 gains +0.3 to +0.8 dB on six at s = 3000 (the gray textures within
/// ±0.1) and +1.0 to +2.8 dB on all eight at s = 10 000, but loses up to 0.4 dB on the gray
/// textures at s = 1000, where β = 0.1 or 0.2 stays within ±0.2 dB. With the frequencies from
/// the spectrum (0.6.0) brick loses 0.78 dB at s = 2000 where the other seven gain up to 0.42.
pub const MOMENTUM_FROM_NONZEROS: usize = 3000;

/// `below` for a spinr minibatch image fit with fewer than [`MOMENTUM_FROM_NONZEROS`]
/// nonzeros, `from` from there on: the one threshold that splits the minibatch defaults
/// (momentum above it; candidates and a growing support below).
fn by_momentum_threshold(s: usize, below: f32, from: f32) -> f32 {
    if s < MOMENTUM_FROM_NONZEROS {
        below
    } else {
        from
    }
}

/// Momentum of a spinr minibatch image fit with `s` nonzeros.
pub fn default_minibatch_momentum(s: usize) -> f32 {
    by_momentum_threshold(s, 0.0, DEFAULT_MINIBATCH_MOMENTUM)
}

/// Candidates of spinr's minibatch image fits below [`MOMENTUM_FROM_NONZEROS`] nonzeros, as a
/// multiple of `s` ([`IhtConfig::candidates`]). Measured on eight photos at 128², s = 1000,
/// seeds 0–2 (README, "Candidates"): twice `s` with two refinement steps on each side of the
/// prune gains a median +0.40 dB for 1.2–1.4× the time, where as much time spent on epochs
/// gains +0.10; 1.5× and 3× gain less (+0.23, +0.24), and one step after the prune loses.
/// From s = 3000 momentum serves better (+0.17 dB at 1.5× the time with both).
pub const DEFAULT_MINIBATCH_CANDIDATES: f32 = 2.0;
/// Refinement steps on each side of the prune when an update over-selects.
pub const DEFAULT_CANDIDATE_INNER: usize = 2;

/// Candidates of a spinr minibatch image fit with `s` nonzeros (1: none beyond `s`).
pub fn default_minibatch_candidates(s: usize) -> f32 {
    by_momentum_threshold(s, DEFAULT_MINIBATCH_CANDIDATES, 1.0)
}

/// A candidate multiple must be a finite number ≥ 1 (1 = plain IHT).
pub fn check_candidates(c: f32) -> Result<()> {
    if c.is_finite() && c >= 1.0 {
        Ok(())
    } else {
        Err(Error::invalid(
            Param::Candidates,
            format!("{c} must be a number ≥ 1 (1: keep only the s largest, as plain IHT)"),
        ))
    }
}

/// The share of `s` spinr's minibatch image fits below [`MOMENTUM_FROM_NONZEROS`] start from
/// ([`IhtConfig::grow_from`]). Measured on eight photos, seeds 0–2 (README, "Growing the
/// support"): starting from half of `s` and reaching `s` after 15% of the epochs gains a
/// median +0.26 dB at 128², s = 1000 (the smooth and colour photos +0.25 to +0.62, brick
/// −0.38) and +0.20 at 256², in 0.8–1.0× the time; from s = 3000, with momentum, it gains
/// nothing (128²: −0.03, brick −1.11).
pub const DEFAULT_MINIBATCH_GROW_FROM: f32 = 0.5;

/// The share of `s` a spinr minibatch image fit with `s` nonzeros starts from (1: all).
pub fn default_minibatch_grow_from(s: usize) -> f32 {
    by_momentum_threshold(s, DEFAULT_MINIBATCH_GROW_FROM, 1.0)
}

/// The share of the epochs over which a growing support reaches `s` ([`IhtConfig::grow_from`]).
pub const GROW_EPOCHS_SHARE: f64 = 0.15;

/// A support's starting share must be a finite number in (0, 1] (1: `s` from the start).
pub fn check_grow_from(f: f32) -> Result<()> {
    if f.is_finite() && f > 0.0 && f <= 1.0 {
        Ok(())
    } else {
        Err(Error::invalid(
            Param::GrowFrom,
            format!("{f} must be in (0, 1] (1: all s nonzeros from the first update)"),
        ))
    }
}

/// Refinement steps per IHT step of spinr's full-batch image fits (the digit grid with Armijo:
/// median 71.1 dB with K = 3 against 151.9 with K = 10 at (10, 1000)).
pub const DEFAULT_IMAGE_INNER: usize = 10;
/// Refinement steps per update of minibatch image fits: many cheap updates per epoch; 3
/// reached the PSNR of 10 per epoch at a third of the time on camera.png.
pub const DEFAULT_MINIBATCH_INNER: usize = 3;

#[derive(Clone, Debug)]
pub struct IhtConfig {
    /// Nonzeros `s`.
    pub s: usize,
    /// Epochs (full passes over the samples).
    pub iters: usize,
    /// Refinement steps `K` per IHT step.
    pub inner: usize,
    /// Samples per update (of the first epoch when batches grow); `None` = full batch.
    pub batch_size: Option<usize>,
    /// Samples per update of the last epoch, batches growing geometrically from
    /// `batch_size` (`train::Schedule::grow_to`); `None` = one size throughout.
    pub batch_end: Option<usize>,
    /// Seed of the minibatch order.
    pub seed: u64,
    pub gates: GateMode,
    pub first_step: FirstStep,
    pub refine: Refine,
    /// Armijo: halvings before the refinement resets to the thresholded vector.
    pub max_backtracks: usize,
    /// Sequential mode: when the loss stalls while some sample with a positive residual has
    /// every neuron switched off, re-seed the weakest neuron around that sample.
    pub rescue: bool,
    /// After the last epoch: rounds of [`POLISH_STEPS`] conjugate-gradient steps over all
    /// samples on the best model's support, its gates fixed, then the gates updated (ReLU
    /// gating).
    pub polish: usize,
    /// Momentum β: from the fifth update on, each update starts from
    /// `w + β·(w − w_prev)` on `w`'s support
    /// ([`SparseVec::extrapolate`](crate::sparse::SparseVec::extrapolate)) instead of `w`.
    /// 0: off.
    pub momentum: f32,
    /// Over-selection: each step keeps the `candidates·s` largest entries of `w − μ·g`
    /// (at most `m·d`), refines them `inner` steps, prunes back to the `s` largest and refines
    /// those `inner` steps more, so an entry competes for the support with a refined value
    /// rather than its first gradient step. 1: plain IHT.
    pub candidates: f32,
    /// Support growth: the first epoch's updates keep `grow_from·s` nonzeros, and the support
    /// grows linearly, epoch by epoch, to `s` after [`GROW_EPOCHS_SHARE`] of the epochs
    /// ([`IhtConfig::support_at`]). Fewer unknowns while the support is still being found
    /// make each update's few refinement steps on a small minibatch better determined.
    /// 1: `s` throughout.
    pub grow_from: f32,
    /// Wall-clock seconds for the epochs and the polish (`spinr fit --time-budget`): the
    /// epoch count is re-planned after every epoch to fit them (`crate::pace`), starting from
    /// `iters`. `None`: `iters` epochs.
    pub time_budget: Option<f64>,
}

/// Conjugate-gradient steps per polish round.
pub const POLISH_STEPS: usize = 20;

impl IhtConfig {
    /// How the epoch loop visits `n` samples under this configuration.
    pub fn schedule(&self, n: usize) -> crate::train::Schedule {
        crate::train::Schedule {
            n,
            epochs: self.iters,
            batch_size: self.batch_size,
            grow_to: self.batch_end,
            seed: self.seed,
        }
    }

    pub fn new(s: usize, iters: usize, gates: GateMode) -> Self {
        Self {
            s,
            iters,
            inner: if gates == GateMode::Gaussian { 3 } else { 10 },
            batch_size: None,
            batch_end: None,
            seed: 0,
            gates,
            first_step: FirstStep::Paper,
            refine: Refine::Exact,
            max_backtracks: 11,
            rescue: false,
            polish: 0,
            momentum: 0.0,
            candidates: 1.0,
            grow_from: 1.0,
            time_budget: None,
        }
    }

    /// Nonzeros the updates of `epoch` keep: `s`, or on a growing support
    /// (`grow_from < 1`) `grow_from·s` in epoch 0, rising linearly to `s` at epoch
    /// `GROW_EPOCHS_SHARE·iters` (at least one nonzero). The last epoch always keeps `s`, so
    /// even a fit of one or two epochs ends with its whole budget.
    pub fn support_at(&self, epoch: usize) -> usize {
        self.support_in(epoch, self.iters)
    }

    /// [`IhtConfig::support_at`] in a fit of `epochs` epochs (a time budget's latest count).
    pub fn support_in(&self, epoch: usize, epochs: usize) -> usize {
        if self.grow_from >= 1.0 || epoch + 1 >= epochs {
            return self.s;
        }
        // `epochs ≥ 2` here, so the ramp is longer than zero epochs.
        let t = epoch as f64 / (GROW_EPOCHS_SHARE * epochs as f64);
        let share = self.grow_from as f64 + (1.0 - self.grow_from as f64) * t;
        ((self.s as f64 * share).round() as usize).clamp(1, self.s)
    }

    /// Entries an update keeps before it prunes to `s`, for a signal of `signal_len` entries:
    /// `s`, or the candidates. It is also the nonzeros a backend must hold.
    pub fn pool(&self, signal_len: usize) -> usize {
        let pool = (self.s as f64 * self.candidates as f64).ceil();
        (pool.min(signal_len as f64) as usize).max(self.s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn growing(s: usize, iters: usize, grow_from: f32) -> IhtConfig {
        IhtConfig {
            grow_from,
            ..IhtConfig::new(s, iters, GateMode::Sequential)
        }
    }

    #[test]
    fn a_growing_support_starts_from_its_share_and_reaches_s_by_the_ramp() {
        // 30 epochs: the ramp is 4.5 epochs long, so 500, 611, 722, 833, 944, then 1000.
        let cfg = growing(1000, 30, 0.5);
        let seen: Vec<usize> = (0..7).map(|e| cfg.support_at(e)).collect();
        assert_eq!(seen, [500, 611, 722, 833, 944, 1000, 1000]);
        assert_eq!(cfg.support_at(29), 1000);
        // Never below one nonzero, never above s, and s in the last epoch however short.
        assert_eq!(growing(1, 30, 0.1).support_at(0), 1);
        assert_eq!(growing(3, 30, 0.01).support_at(0), 1);
        assert_eq!(growing(1000, 1, 0.5).support_at(0), 1000);
        assert_eq!(growing(1000, 2, 0.5).support_at(0), 500);
        assert_eq!(growing(1000, 2, 0.5).support_at(1), 1000);
        // 1 is off.
        assert!((0..30).all(|e| growing(1000, 30, 1.0).support_at(e) == 1000));
    }

    #[test]
    fn support_shares_outside_zero_to_one_are_refused_naming_the_flag() {
        for bad in [0.0, -0.5, 1.5, f32::NAN, f32::INFINITY] {
            let choices = IhtChoices {
                grow_from: Some(bad),
                ..IhtChoices::default()
            };
            let err = choices
                .resolve(Variant::Spinr, Task::Image, 100, 10, GateMode::Sequential)
                .unwrap_err();
            assert!(err.to_string().contains("(0, 1]"), "{bad}: {err}");
        }
        let ok = IhtChoices {
            grow_from: Some(0.25),
            ..IhtChoices::default()
        };
        let cfg = ok
            .resolve(Variant::Spinr, Task::Image, 100, 10, GateMode::Sequential)
            .unwrap();
        assert_eq!(cfg.grow_from, 0.25);
    }
}
