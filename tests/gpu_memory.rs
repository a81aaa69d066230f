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
        image_frequencies: Vec::new(),
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

#[test]
fn fits_beyond_the_device_are_refused_before_allocating() {
    let ctx = common::gpu_ctx();
    // 1. A budget (`--max-memory`) below the fit's buffers, on any adapter.
    let (axes, y) = image();
    let p = Arc::new(spec(64).problem(&axes, &axes, y).unwrap());
    let opts = spinr::backend::gpu::GpuOptions {
        device_budget: 64 << 10,
        ..Default::default()
    };
    let e = GpuBackend::with_options(ctx.clone(), p, 150, opts)
        .err()
        .expect("refused");
    assert!(
        matches!(e, spinr::Error::DeviceLimit { limit, .. } if limit == 64 << 10),
        "{e}"
    );
    assert!(
        e.to_string().contains("--max-memory") && e.is_bad_input(),
        "{e}"
    );

    // 2. Through the CLI: a fit whose per-sample state (about 20 bytes a sample) exceeds the
    // adapter's largest buffer binding exits 2, naming the size and the fix.
    let binding = ctx
        .limits()
        .max_storage_buffer_binding_size
        .min(ctx.limits().max_buffer_size);
    let side = ((binding / 16) as f64).sqrt().ceil() as usize;
    if side > 8192 {
        eprintln!(
            "this adapter binds {binding} bytes: every image spinr accepts (8192²) fits it; \
             only the budget case ran"
        );
        return;
    }
    let side = side.to_string();
    let camera = common::asset("camera.png");
    let out = common::spinr(&[
        "fit",
        camera.to_str().unwrap(),
        "--resize",
        &side,
        "--iters",
        "1",
        "--backend",
        "gpu",
        "--out",
        "o",
    ]);
    let err = common::stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("GPU limit exceeded") && err.contains("MiB") && err.contains("--backend cpu"),
        "{err}"
    );
}
