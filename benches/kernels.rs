//! Criterion benchmarks of every kernel and one whole IHT step, on the CPU and (when an adapter
//! exists) the GPU backend, at the paper-sized problem. The large problem (512×512 image) runs
//! when `SPINR_BENCH_LARGE=1` (minutes per kernel on a 2-core CPU).

use criterion::{criterion_group, criterion_main, Criterion};
use spinr::backend::{self, BackendChoice, Device, Slot};
use spinr::bench::{BenchProblem, BenchSize};
use spinr::iht::{self, IhtConfig};
use spinr::problem::GateMode;

fn bench_backend(c: &mut Criterion, name: &str, b: &mut dyn Device, bp: &BenchProblem) {
    let s = bp.size.s;
    let tag = format!("{name}/n{}-d{}-m{}-s{}", bp.size.n, bp.size.d, bp.size.m, s);
    let mut g = c.benchmark_group(tag);
    g.sample_size(10);
    bp.prepare(b.as_backend()).unwrap();
    g.bench_function("forward", |x| x.iter(|| b.forward(Slot::W).unwrap()));
    g.bench_function("step_size", |x| {
        x.iter(|| b.step_size(Slot::W, Slot::G).unwrap())
    });
    g.bench_function("trial", |x| {
        x.iter(|| b.trial(Slot::W, Slot::G, Slot::TRIAL, 1e-3, true).unwrap())
    });
    b.forward(Slot::W).unwrap();
    g.bench_function("dense_pass_topk", |x| {
        x.iter(|| {
            b.threshold(Slot::W, 1e-3, s, Slot::V).unwrap();
            b.sync().unwrap()
        })
    });
    let cfg = IhtConfig::new(s, 1, GateMode::Sequential);
    g.bench_function("iht_step", |x| {
        x.iter(|| {
            bp.prepare(b.as_backend()).unwrap();
            iht::step(b.as_backend(), &cfg, false).unwrap();
            b.sync().unwrap()
        })
    });
    g.finish();
}

fn kernels(c: &mut Criterion) {
    let mut sizes = vec![BenchSize::SMALL];
    if std::env::var_os("SPINR_BENCH_LARGE").is_some() {
        sizes.push(BenchSize::LARGE);
    }
    for size in sizes {
        let bp = BenchProblem::new(size).unwrap();
        for choice in [BackendChoice::Cpu, BackendChoice::Gpu] {
            match backend::create(choice, None, bp.problem.clone(), size.s) {
                Ok(mut b) => {
                    let name = b.info().kind;
                    bench_backend(c, name, b.as_mut(), &bp)
                }
                Err(e) => eprintln!("skipping {choice:?}: {e}"),
            }
        }
    }
}

criterion_group!(benches, kernels);
criterion_main!(benches);
