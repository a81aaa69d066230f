//! Device memory of an image fit does not grow with the number of neurons: fitting the same
//! image with the same `s` at m = 64 and m = 4096 may differ only by the dense pass's tile
//! buffers (issue: "memory that does not grow with m").

use spinr::backend::gpu::GpuBackend;
use spinr::backend::{cpu::CpuBackend, Backend};
use spinr::iht::{self, IhtConfig};
use spinr::inr::{Coords, InrSpec};
use spinr::problem::GateMode;
use std::sync::Arc;

mod common;

fn spec(m: usize) -> InrSpec {
    InrSpec {
        neurons: m,
        features: 64,
        sigma: vec![6.0, 6.0],
        coords: Coords::Unit,
        feature_seed: 1,
        gate_seed: 2,
        gates: GateMode::Sequential,
        constant_feature: true,
    }
}

fn image() -> (Vec<usize>, Vec<f32>) {
    let (h, w) = (24, 21);
    let y = (0..h * w)
        .map(|i| {
            let (r, c) = ((i / w) as f32, (i % w) as f32);
            0.5 + 0.4 * (r * 0.3).sin() * (c * 0.2).cos()
        })
        .collect();
    (vec![h, w], y)
}

/// Peak and tile bytes of a 3-iteration fit.
fn fit(b: &mut dyn Backend, n: usize, s: usize) -> (u64, u64) {
    let cfg = IhtConfig::new(s, 3, GateMode::Sequential);
    let r = iht::fit(b, n, &cfg, |_| std::ops::ControlFlow::Continue(())).unwrap();
    assert!(r.loss.is_finite());
    let m = b.memory();
    (m.peak_bytes, m.tile_bytes)
}

#[test]
fn peak_device_bytes_do_not_grow_with_neurons() {
    let ctx = common::gpu_ctx();
    let (axes, y) = image();
    let s = 150;
    let mut peaks = Vec::new();
    for m in [64, 4096] {
        let p = Arc::new(spec(m).problem(&axes, &axes, y.clone()).unwrap());
        let mut gpu = GpuBackend::new(ctx.clone(), p.clone(), s).unwrap();
        let g = fit(&mut gpu, p.n, s);
        let mut cpu = CpuBackend::new(p.clone(), s, 0).unwrap();
        let c = fit(&mut cpu, p.n, s);
        eprintln!(
            "m={m}: gpu peak {} B (tiles {}), cpu peak {} B (tiles {})",
            g.0, g.1, c.0, c.1
        );
        peaks.push((g, c));
    }
    let ((g64, c64), (g4k, c4k)) = (peaks[0], peaks[1]);
    let gpu_growth = g4k.0.abs_diff(g64.0);
    assert!(
        gpu_growth <= g4k.1.max(g64.1),
        "GPU peak grew by {gpu_growth} B, tiles are {} B",
        g4k.1
    );
    let cpu_growth = c4k.0.abs_diff(c64.0);
    assert!(
        cpu_growth <= c4k.1.max(c64.1),
        "CPU peak grew by {cpu_growth} B, tiles are {} B",
        c4k.1
    );
    // And nothing close to an m·d array (4096·64 floats = 1 MiB) beyond the tiles.
    assert!(g4k.0 - g4k.1 < 4 * 4096 * 64, "GPU peak {} B", g4k.0);
}
