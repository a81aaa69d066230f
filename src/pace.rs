//! A wall-clock budget for a fit (`spinr fit --time-budget`): the epoch loop re-plans its epoch
//! count after every epoch so that the epochs and the polish after them end near the budget.
//!
//! Cost model, refitted after every epoch from the epochs run so far: an epoch's updates take
//! `a·U + b` seconds for `U` updates (each update's fixed work, then the epoch's work over all
//! samples, which is the same whatever the batch size), plus one evaluation on all samples; the
//! polish after the last epoch costs `tail_evals` evaluations. With batches that grow, later
//! epochs make fewer updates, so the first epoch alone overstates their cost: the first plan
//! takes every epoch to cost as much as the first (`a = 0`) and the count grows as the
//! epochs show what they cost. The count that fits is found by bisection, since more epochs
//! cost more (each epoch to come makes at least as many updates in a longer schedule).
//!
//! The count depends on the machine and its load, so a budgeted fit is not reproducible bit
//! for bit; its report gives the epochs it ran, and `--iters` with that count fits the same
//! schedule except where the count was re-planned after epochs it had already run.

use crate::train::{Pace, Schedule};
use std::time::Instant;

/// The most epochs a budget may plan (a tiny image on a fast GPU would otherwise plan millions).
pub const MAX_BUDGET_EPOCHS: usize = 10_000;

/// Seconds since some fixed point (a real clock, or a scripted one in tests).
pub type Clock = Box<dyn FnMut() -> f64>;

/// A real clock starting now.
pub fn wall_clock() -> Clock {
    let t0 = Instant::now();
    Box::new(move || t0.elapsed().as_secs_f64())
}

/// Plans the epoch count of a loop to fit `budget` seconds from its creation.
pub struct TimeBudget {
    budget: f64,
    tail_evals: f64,
    clock: Clock,
    start: f64,
    epoch_start: f64,
    eval_start: f64,
    updates: usize,
    /// Over the epochs run: their count, `Σ U`, `Σ t`, `Σ U²` and `Σ U·t` (`U` updates whose
    /// updates took `t` seconds), all the least squares of [`TimeBudget::model`] needs.
    fit: [f64; 5],
    /// Seconds of all evaluations so far (one per epoch run).
    eval_seconds: f64,
}

impl TimeBudget {
    /// `tail_evals`: what runs after the last epoch (the polish), in evaluations on all
    /// samples.
    pub fn new(budget: f64, tail_evals: f64, mut clock: Clock) -> Self {
        let start = clock();
        Self {
            budget,
            tail_evals,
            clock,
            start,
            epoch_start: start,
            eval_start: start,
            updates: 0,
            fit: [0.0; 5],
            eval_seconds: 0.0,
        }
    }

    /// Whether the whole budget is gone (the polish after the epochs is then skipped).
    pub fn spent(&mut self) -> bool {
        (self.clock)() - self.start >= self.budget
    }

    /// `(a, b)` of the cost model `a·U + b`, from the epochs run so far (least squares over
    /// them, both terms at least 0; with one update count seen, all of it in `b`).
    fn model(&self) -> (f64, f64) {
        let [k, su, st, suu, sut] = self.fit;
        let (mean_u, mean_t) = (su / k, st / k);
        // Centred sums; update counts that hardly differ say nothing of `a`.
        let (cuu, cut) = (suu - k * mean_u * mean_u, sut - k * mean_u * mean_t);
        if cuu <= 1e-9 * k * mean_u.powi(2).max(1.0) {
            return (0.0, mean_t);
        }
        let a = cut / cuu;
        let b = mean_t - a * mean_u;
        if a < 0.0 {
            (0.0, mean_t)
        } else if b < 0.0 {
            (sut / suu, 0.0)
        } else {
            (a, b)
        }
    }

    /// Predicted seconds of epochs `after + 1 ..` of a schedule of `epochs`, and the tail.
    fn cost(&self, schedule: &Schedule, after: usize, epochs: usize, ab: (f64, f64)) -> f64 {
        let plan = Schedule {
            epochs,
            ..*schedule
        };
        // The mean evaluation: the first's warm-up makes it err on the safe side.
        let eval = self.eval_seconds / self.fit[0];
        let epochs_cost: f64 = (after + 1..epochs)
            .map(|e| ab.0 * plan.updates_in(e) as f64 + ab.1 + eval)
            .sum();
        epochs_cost + self.tail_evals * eval
    }
}

impl Pace for TimeBudget {
    fn start_epoch(&mut self, _epoch: usize, updates: usize) {
        self.epoch_start = (self.clock)();
        self.updates = updates;
    }

    fn updates_done(&mut self) {
        self.eval_start = (self.clock)();
        let (u, t) = (self.updates as f64, self.eval_start - self.epoch_start);
        for (sum, x) in self.fit.iter_mut().zip([1.0, u, t, u * u, u * t]) {
            *sum += x;
        }
    }

    fn plan(&mut self, epoch: usize, schedule: &Schedule) -> usize {
        let now = (self.clock)();
        self.eval_seconds += now - self.eval_start;
        let left = self.budget - (now - self.start);
        let ab = self.model();
        let fits = |e: usize| self.cost(schedule, epoch, e, ab) <= left;
        // The largest count that fits: `lo` fits (or is the floor), `hi` does not.
        let (mut lo, mut hi) = (epoch + 1, MAX_BUDGET_EPOCHS.max(epoch + 1) + 1);
        if fits(hi - 1) {
            return hi - 1;
        }
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if fits(mid) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        lo
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    /// A clock the test moves by hand.
    fn scripted() -> (Rc<Cell<f64>>, Clock) {
        let t = Rc::new(Cell::new(0.0));
        let c = t.clone();
        (t, Box::new(move || c.get()))
    }

    fn growing(epochs: usize) -> Schedule {
        Schedule {
            n: 65_536,
            epochs,
            batch_size: Some(256),
            grow_to: Some(16_384),
            seed: 0,
        }
    }

    /// Runs epochs that cost `a·U + b` plus an evaluation of `eval` seconds through the
    /// budget's plans, as the loop does; returns the epochs run and the seconds used.
    fn simulate(budget: f64, tail: f64, a: f64, b: f64, eval: f64) -> (usize, f64) {
        let (t, clock) = scripted();
        let mut pace = TimeBudget::new(budget, tail, clock);
        let mut s = growing(30);
        let mut epoch = 0;
        while epoch < s.epochs {
            let u = s.updates_in(epoch);
            pace.start_epoch(epoch, u);
            t.set(t.get() + a * u as f64 + b);
            pace.updates_done();
            t.set(t.get() + eval);
            s.epochs = pace.plan(epoch, &s).max(epoch + 1);
            epoch += 1;
        }
        (epoch, t.get() + tail * eval)
    }

    #[test]
    fn a_budget_is_spent_but_not_overspent() {
        for &(budget, a, b) in &[(10.0, 1.4e-3, 0.2), (60.0, 1.4e-3, 0.2), (5.0, 1e-4, 0.05)] {
            let (epochs, used) = simulate(budget, 42.0, a, b, 0.02);
            assert!(used <= budget, "{used} s of {budget}");
            assert!(
                used >= 0.9 * budget,
                "{used} s of {budget}: too little spent"
            );
            assert!(epochs > 1);
        }
    }

    #[test]
    fn a_budget_spent_on_the_first_epoch_stops_there() {
        let (epochs, _) = simulate(0.1, 42.0, 1e-3, 0.5, 0.02);
        assert_eq!(epochs, 1);
    }

    #[test]
    fn a_budget_is_spent_when_its_seconds_have_passed() {
        let (t, clock) = scripted();
        t.set(5.0);
        let mut pace = TimeBudget::new(2.0, 42.0, clock);
        t.set(6.9);
        assert!(!pace.spent());
        t.set(7.0);
        assert!(pace.spent());
    }

    #[test]
    fn a_large_budget_stops_at_the_cap() {
        let (epochs, _) = simulate(1e12, 0.0, 1e-6, 1e-6, 1e-6);
        assert_eq!(epochs, MAX_BUDGET_EPOCHS);
    }

    #[test]
    fn the_model_separates_update_and_epoch_costs() {
        let (t, clock) = scripted();
        let mut pace = TimeBudget::new(100.0, 0.0, clock);
        for (e, u) in [256usize, 128, 64, 4].into_iter().enumerate() {
            pace.start_epoch(e, u);
            t.set(t.get() + 2e-3 * u as f64 + 0.3);
            pace.updates_done();
        }
        let (a, b) = pace.model();
        assert!((a - 2e-3).abs() < 1e-9 && (b - 0.3).abs() < 1e-9, "{a} {b}");
    }
}
