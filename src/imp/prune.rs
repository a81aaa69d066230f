//! Global magnitude pruning over `U` and `V` together, and rewinding to the initial weights.
//!
//! A round prunes `⌈fraction · remaining⌉` of the weights still alive (rounding *up*, so
//! every round prunes at least one weight and IMP always reaches `s`; PyTorch's
//! `prune.global_unstructured` rounds to nearest, a difference of at most one weight per
//! round): the alive weights of smallest `|w|`, ties going to the lower flat index (`U`'s
//! `j·d + k` first, then `V` from `m·d`), so the result never depends on sort stability.

use crate::error::{Error, Param, Result};

/// Which weights are alive, in the layout `[U | V]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Masks {
    pub u: Vec<bool>,
    pub v: Vec<bool>,
}

impl Masks {
    /// Every weight alive.
    pub fn full(u_len: usize, v_len: usize) -> Self {
        Masks {
            u: vec![true; u_len],
            v: vec![true; v_len],
        }
    }

    /// Alive weights.
    pub fn count(&self) -> usize {
        self.u.iter().chain(&self.v).filter(|&&b| b).count()
    }

    /// Host bytes of the masks (one byte per weight).
    pub fn bytes(&self) -> u64 {
        (self.u.len() + self.v.len()) as u64
    }
}

/// Weights a round prunes when `remaining` are alive: `⌈fraction · remaining⌉`, at least one,
/// at most `remaining`.
pub fn prune_count(remaining: usize, fraction: f64) -> usize {
    ((fraction * remaining as f64).ceil() as usize)
        .max(1)
        .min(remaining)
}

/// Rounds a run trains to bring `total` weights to at most `target` (the dense round
/// included), pruning [`prune_count`] after each: what a progress bar counts.
pub fn rounds(total: usize, target: usize, fraction: f64) -> usize {
    let mut alive = total;
    let mut rounds = 1;
    while alive > target && alive > 0 {
        alive -= prune_count(alive, fraction);
        rounds += 1;
    }
    rounds
}

/// Checks a pruning fraction.
pub fn check_fraction(fraction: f64) -> Result<()> {
    if !(fraction > 0.0 && fraction < 1.0) {
        return Err(Error::invalid(
            Param::Nonzeros,
            format!("the pruning fraction {fraction} must lie strictly between 0 and 1"),
        ));
    }
    Ok(())
}

/// Prunes the `count` alive weights of smallest magnitude (ties: lower flat index first) from
/// `masks`, given the trained `u` and `v`. Returns how many were pruned.
pub fn prune(u: &[f32], v: &[f32], masks: &mut Masks, count: usize) -> usize {
    let ul = u.len();
    // Key: |w| as bits (monotone for non-negative floats), then the flat index.
    let mut alive: Vec<(u32, u32)> = u
        .iter()
        .chain(v)
        .zip(masks.u.iter().chain(&masks.v))
        .enumerate()
        .filter(|(_, (_, &keep))| keep)
        .map(|(i, (w, _))| (w.abs().to_bits(), i as u32))
        .collect();
    let count = count.min(alive.len());
    if count == 0 {
        return 0;
    }
    if count < alive.len() {
        alive.select_nth_unstable(count - 1);
    }
    for &(_, i) in &alive[..count] {
        let i = i as usize;
        if i < ul {
            masks.u[i] = false;
        } else {
            masks.v[i - ul] = false;
        }
    }
    count
}

/// The initial weights restricted to the alive ones (pruned entries zero).
pub fn rewind(init: &[f32], mask: &[bool]) -> Vec<f32> {
    init.iter()
        .zip(mask)
        .map(|(&w, &keep)| if keep { w } else { 0.0 })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_round_up_and_always_progress() {
        assert_eq!(prune_count(100, 0.1), 10);
        assert_eq!(prune_count(101, 0.1), 11);
        assert_eq!(prune_count(5, 0.1), 1);
        assert_eq!(prune_count(1, 0.1), 1);
    }

    #[test]
    fn rounds_count_the_dense_round_and_every_pruned_one() {
        assert_eq!(rounds(100, 100, 0.1), 1);
        assert_eq!(rounds(100, 95, 0.1), 2);
        // 10, 9, …, 1 alive: one weight goes per round.
        assert_eq!(rounds(10, 1, 0.1), 10);
        // 100 → 90 → 81 → 72: three prunes.
        assert_eq!(rounds(100, 75, 0.1), 4);
    }

    #[test]
    fn prunes_the_smallest_alive_weights_ties_to_the_lower_index() {
        let u = [0.5f32, -0.1, 0.1, 3.0, 0.0, 2.0];
        let v = [-0.1f32, 1.0];
        let mut m = Masks::full(6, 2);
        // Weight 4 is already pruned: it must not count again.
        m.u[4] = false;
        // |0.1| ties at flat 1, 2 and 6 (V's first): two go, the lower indices.
        assert_eq!(prune(&u, &v, &mut m, 2), 2);
        assert_eq!(m.u, vec![true, false, false, true, false, true]);
        assert_eq!(m.v, vec![true, true]);
        assert_eq!(m.count(), 5);
        assert_eq!(prune(&u, &v, &mut m, 2), 2);
        assert_eq!(m.v, vec![false, true]);
        assert!(!m.u[0]);
        assert_eq!(
            rewind(&[9.0, 8.0, 7.0, 6.0, 5.0, 4.0], &m.u),
            vec![0.0, 0.0, 0.0, 6.0, 0.0, 4.0]
        );
        assert!(check_fraction(1.0).is_err() && check_fraction(0.1).is_ok());
    }
}
