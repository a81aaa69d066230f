//! The CPU network against a naive f64 reference, pruning rounds, and small IMP runs.

use super::adam::AdamStep;
use super::cpu::CpuMlp;
use super::mlp::{DenseMlp, MlpData, MlpShape, Targets};
use super::*;
use crate::problem::{Features, GateMode, Problem};
use rand::{Rng, SeedableRng};
use std::ops::ControlFlow;

/// Loss (mean, torch's convention) and gradients of the mean loss, in f64 from the definition.
pub(crate) fn reference(
    x: &[f32],
    rows: &[usize],
    t: &Targets,
    s: MlpShape,
    u: &[f32],
    v: &[f32],
) -> (f64, Vec<f64>, Vec<f64>) {
    let MlpShape { d, m, c, .. } = s;
    let nb = rows.len() as f64;
    let mut loss = 0.0;
    let mut gu = vec![0.0; m * d];
    let mut gv = vec![0.0; m * c];
    for &i in rows {
        let xi = &x[i * d..(i + 1) * d];
        let z: Vec<f64> = (0..m)
            .map(|j| (0..d).map(|k| u[j * d + k] as f64 * xi[k] as f64).sum())
            .collect();
        let h: Vec<f64> = z.iter().map(|&z| z.max(0.0)).collect();
        let o: Vec<f64> = (0..c)
            .map(|cc| (0..m).map(|j| h[j] * v[j * c + cc] as f64).sum())
            .collect();
        let r: Vec<f64> = match t {
            Targets::Values(y) => {
                let e: Vec<f64> = (0..c).map(|cc| o[cc] - y[i * c + cc] as f64).collect();
                loss += e.iter().map(|e| e * e).sum::<f64>() / (nb * c as f64);
                e.iter().map(|e| 2.0 * e / (nb * c as f64)).collect()
            }
            Targets::Labels(l) => {
                let mx = o.iter().cloned().fold(f64::MIN, f64::max);
                let lse = mx + o.iter().map(|v| (v - mx).exp()).sum::<f64>().ln();
                loss += (lse - o[l[i] as usize]) / nb;
                (0..c)
                    .map(|cc| ((o[cc] - lse).exp() - (cc == l[i] as usize) as u8 as f64) / nb)
                    .collect()
            }
            Targets::None => unreachable!(),
        };
        for j in 0..m {
            for cc in 0..c {
                gv[j * c + cc] += h[j] * r[cc];
            }
            if z[j] > 0.0 {
                let gh: f64 = (0..c).map(|cc| r[cc] * v[j * c + cc] as f64).sum();
                for k in 0..d {
                    gu[j * d + k] += gh * xi[k] as f64;
                }
            }
        }
    }
    (loss, gu, gv)
}

pub(crate) fn random(rng: &mut impl Rng, len: usize, scale: f32) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(-scale..scale)).collect()
}

#[track_caller]
fn assert_close(what: &str, got: &[f32], want: &[f64], rel: f64) {
    let scale = want.iter().fold(0f64, |a, &b| a.max(b.abs()));
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g as f64 - w).abs() <= rel * scale + 1e-12,
            "{what}[{i}]: {g} vs {w} (scale {scale})"
        );
    }
}

#[test]
fn gradients_match_the_f64_reference() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    for (n, d, m, c, labels, batch) in [
        (37, 13, 7, 1, false, false),
        (150, 9, 70, 3, false, true),
        (70, 21, 5, 10, true, false),
        (20, 4, 1, 1, false, true),
    ] {
        let s = MlpShape { n, d, m, c };
        let x = random(&mut rng, n * d, 1.0);
        let t = if labels {
            Targets::Labels((0..n).map(|_| rng.random_range(0..c as u32)).collect())
        } else {
            Targets::Values(random(&mut rng, n * c, 1.0))
        };
        let features = Features::Dense(x.clone());
        let data = MlpData {
            features: &features,
            n,
            d,
            targets: &t,
        };
        let mut mlp = CpuMlp::new(data, m, c, 0).unwrap();
        let u = random(&mut rng, m * d, 0.5);
        let mut v = random(&mut rng, m * c, 0.5);
        // A pruned neuron: its output weights are zero.
        v[..c].fill(0.0);
        mlp.set_weights(&u, &v).unwrap();
        let rows: Vec<usize> = if batch {
            (0..n).rev().step_by(3).collect()
        } else {
            (0..n).collect()
        };
        let idx: Vec<u32> = rows.iter().map(|&i| i as u32).collect();
        let b = batch.then_some(idx.as_slice());
        mlp.forward_backward(b).unwrap();
        let (loss, gu, gv) = reference(&x, &rows, &t, s, &u, &v);
        let got = mlp.last_loss().unwrap() / rows.len() as f64;
        assert!((got - loss).abs() <= 1e-5 * loss, "loss {got} vs {loss}");
        let (cu, cv) = mlp.gradients().unwrap();
        assert_close("gU", &cu, &gu, 1e-5);
        assert_close("gV", &cv, &gv, 1e-5);
        let l2 = mlp.loss(b).unwrap() / rows.len() as f64;
        assert_eq!(l2, got, "forward-only loss equals the training pass's");
    }
}

#[test]
fn blocks_and_thread_counts_do_not_change_results() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let (n, d, m) = (300, 40, 30);
    let x = random(&mut rng, n * d, 1.0);
    let t = Targets::Values(random(&mut rng, n, 1.0));
    let features = Features::Dense(x);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let data = MlpData {
                features: &features,
                n,
                d,
                targets: &t,
            };
            let mut mlp = CpuMlp::new(data, m, 1, 0).unwrap();
            let (u, v) = init_weights(&mlp.shape(), 9);
            mlp.set_weights(&u, &v).unwrap();
            mlp.forward_backward(None).unwrap();
            mlp.adam_step(&AdamStep::new(1, 1e-2)).unwrap();
            mlp.forward_backward(Some(&[5, 3, 299, 0])).unwrap();
            (
                mlp.gradients().unwrap(),
                mlp.weights().unwrap(),
                mlp.predict(None).unwrap(),
            )
        })
    };
    assert_eq!(run(1), run(3));
}

fn planted(n: usize, d: usize, seed: u64) -> Problem {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let x = random(&mut rng, n * d, 1.0);
    // A planted network of 3 neurons with positive and negative output weights.
    let w = random(&mut rng, 3 * d, 1.0);
    let a = [1.0f32, -0.7, 0.5];
    let y = (0..n)
        .map(|i| {
            (0..3)
                .map(|j| {
                    let z: f32 = (0..d).map(|k| w[j * d + k] * x[i * d + k]).sum();
                    a[j] * z.max(0.0)
                })
                .sum::<f32>()
                * 0.5
        })
        .collect();
    Problem::new(d, 1, Features::Dense(x), y, GateMode::Convex, 0).unwrap()
}

#[test]
fn rounds_prune_ten_percent_rewind_and_stop_at_s() {
    let p = planted(64, 6, 1);
    let opts = ImpOptions {
        neurons: 5,
        nonzeros: 20,
        epochs: 3,
        lr: 1e-2,
        seed: 11,
        ..Default::default()
    };
    let shape = MlpShape {
        n: 64,
        d: 6,
        m: 5,
        c: 1,
    };
    let (u0, v0) = init_weights(&shape, 11);
    let mut counts = Vec::new();
    let res = fit(&p, &opts, &ImpDevice::Cpu, |r| {
        // Pruned weights are zero; the alive ones were trained from their initial values.
        let alive = r.u.iter().chain(r.v).filter(|&&w| w != 0.0).count();
        assert_eq!(alive, r.nonzeros, "round {}", r.round);
        counts.push(r.nonzeros);
        ControlFlow::Continue(())
    })
    .unwrap();
    // 35 weights: 35 → 31 → 27 → 24 → 21 → 18 (⌈10%⌉ each round).
    assert_eq!(counts, vec![35, 31, 27, 24, 21, 18]);
    assert_eq!(res.nonzeros, 18);
    assert!(!res.stopped);
    assert_eq!(res.rounds.len(), 6);
    assert_eq!(res.epochs, 18);
    assert_eq!(res.model.nonzeros(), 18);

    // Rewinding: one epoch of one round on a fixed mask from the initial values is what the
    // second round of a run computes.
    let opts1 = ImpOptions {
        nonzeros: 31,
        epochs: 1,
        ..opts.clone()
    };
    let mut after = None;
    fit(&p, &opts1, &ImpDevice::Cpu, |r| {
        after = Some((r.u.to_vec(), r.v.to_vec()));
        ControlFlow::Continue(())
    })
    .unwrap();
    let (u1, v1) = after.unwrap();
    let mut masks = prune::Masks::full(30, 5);
    let mut first = None;
    fit(
        &p,
        &ImpOptions {
            nonzeros: 35,
            ..opts1.clone()
        },
        &ImpDevice::Cpu,
        |r| {
            first = Some((r.u.to_vec(), r.v.to_vec()));
            ControlFlow::Continue(())
        },
    )
    .unwrap();
    let (fu, fv) = first.unwrap();
    prune::prune(&fu, &fv, &mut masks, 4);
    let targets = Targets::Values(p.y.clone());
    let data = MlpData {
        features: &p.features,
        n: 64,
        d: 6,
        targets: &targets,
    };
    let mut mlp = CpuMlp::new(data, 5, 1, 0).unwrap();
    mlp.set_mask(&masks.u, &masks.v).unwrap();
    mlp.set_weights(&prune::rewind(&u0, &masks.u), &prune::rewind(&v0, &masks.v))
        .unwrap();
    mlp.forward_backward(None).unwrap();
    mlp.adam_step(&AdamStep::new(1, 1e-2)).unwrap();
    assert_eq!(mlp.weights().unwrap(), (u1, v1));
}

#[test]
fn a_break_stops_the_run_with_that_round() {
    let p = planted(32, 4, 2);
    let opts = ImpOptions {
        neurons: 4,
        nonzeros: 5,
        epochs: 2,
        ..Default::default()
    };
    let res = fit(&p, &opts, &ImpDevice::Cpu, |r| {
        if r.round == 1 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .unwrap();
    assert!(res.stopped);
    assert_eq!(res.rounds.len(), 2);
    assert_eq!(res.nonzeros, 18);
}

#[test]
fn bad_options_are_errors_not_panics() {
    let p = planted(16, 3, 3);
    let ok = ImpOptions {
        neurons: 2,
        nonzeros: 3,
        epochs: 1,
        ..Default::default()
    };
    for bad in [
        ImpOptions {
            nonzeros: 0,
            ..ok.clone()
        },
        ImpOptions {
            nonzeros: 9,
            ..ok.clone()
        },
        ImpOptions {
            epochs: 0,
            ..ok.clone()
        },
        ImpOptions {
            lr: f32::NAN,
            ..ok.clone()
        },
        ImpOptions {
            prune_fraction: 1.0,
            ..ok.clone()
        },
        ImpOptions {
            batch_size: Some(0),
            ..ok.clone()
        },
        ImpOptions {
            neurons: 0,
            ..ok.clone()
        },
        ImpOptions {
            loss: ImpLoss::CrossEntropy { classes: 3 },
            ..ok.clone()
        },
    ] {
        let e = fit(&p, &bad, &ImpDevice::Cpu, |_| ControlFlow::Continue(())).unwrap_err();
        assert!(e.is_bad_input(), "{e}");
    }
    assert!(fit(&p, &ok, &ImpDevice::Cpu, |_| ControlFlow::Continue(())).is_ok());
}

#[test]
fn an_epoch_break_ends_the_round_and_the_run() {
    let p = planted(32, 4, 4);
    let opts = ImpOptions {
        neurons: 4,
        nonzeros: 5,
        epochs: 3,
        ..Default::default()
    };
    let mut seen = Vec::new();
    let res = fit_observed(
        &p,
        &opts,
        &ImpDevice::Cpu,
        |e| {
            if e.round == 1 && e.epoch == 0 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        },
        |r| {
            seen.push((r.round, r.epochs));
            ControlFlow::Continue(())
        },
    )
    .unwrap();
    assert_eq!(seen, vec![(0, 3), (1, 1)]);
    assert!(res.stopped);
    assert_eq!(res.epochs, 4);
}
