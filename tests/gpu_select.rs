//! Adapter listing and backend selection (`spinr devices`, `--backend gpu|auto`). Needs a GPU
//! adapter (fails, never skips, without one: `apt-get install mesa-vulkan-drivers`).

use spinr::backend::gpu::{list_adapters, GpuContext};
use spinr::backend::{create, BackendChoice};
use spinr::problem::{Features, GateMode, Problem};
use std::sync::Arc;

fn problem() -> Arc<Problem> {
    let (n, d, m) = (9, 4, 3);
    let x: Vec<f32> = (0..n * d).map(|v| (v as f32 * 0.37).sin()).collect();
    let y: Vec<f32> = (0..n).map(|v| v as f32 * 0.1).collect();
    Arc::new(Problem::new(d, m, Features::Dense(x), y, GateMode::Convex, 5).unwrap())
}

#[test]
fn adapters_are_listed_and_serialise() {
    let list = list_adapters();
    assert!(
        !list.is_empty(),
        "no GPU adapter: `apt-get install mesa-vulkan-drivers` gives the lavapipe software adapter"
    );
    let json = serde_json::to_string(&list).unwrap();
    assert!(json.contains("max_storage_buffer_binding_size"));
    for a in &list {
        assert!(
            a.max_buffer_size > 0 && a.max_compute_invocations_per_workgroup >= 256,
            "{a:?}"
        );
    }
}

#[test]
fn gpu_choice_takes_an_adapter_and_names_it() {
    let b = create(BackendChoice::Gpu, None, problem(), 4).unwrap_or_else(|e| {
        panic!("{e} (`apt-get install mesa-vulkan-drivers` gives the lavapipe software adapter)")
    });
    let info = b.info();
    assert_eq!(info.kind, "gpu");
    assert!(!info.adapter.is_empty());
}

#[test]
fn adapter_filter_selects_by_name() {
    let ctx =
        GpuContext::new(None, false).expect("a GPU adapter (apt-get install mesa-vulkan-drivers)");
    let name = ctx.adapter_name();
    // Any case-insensitive substring selects it; a name nobody has is an error saying how to
    // get an adapter.
    let part = name[..name.len().min(5)].to_uppercase();
    let again = GpuContext::new(Some(&part), false).unwrap();
    assert_eq!(again.adapter_name(), name);
    let e = GpuContext::new(Some("no-such-adapter-xyz"), false).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("mesa-vulkan-drivers") && msg.contains("--backend cpu"),
        "{msg}"
    );
}

#[test]
fn auto_prefers_hardware_and_falls_back_to_the_cpu() {
    let b = create(BackendChoice::Auto, None, problem(), 4).unwrap();
    let hardware = list_adapters()
        .iter()
        .any(|a| a.device_type == "DiscreteGpu" || a.device_type == "IntegratedGpu");
    // A software adapter (lavapipe) is never taken by `auto`.
    assert_eq!(b.info().kind, if hardware { "gpu" } else { "cpu" });
}

#[test]
fn ceilings_are_measured() {
    let mut b = create(BackendChoice::Gpu, None, problem(), 4).unwrap();
    let c = b
        .ceilings()
        .unwrap()
        .expect("the GPU backend measures its ceilings");
    assert!(
        c.bytes_per_second > 1e6 && c.flops_per_second > 1e6,
        "{c:?}"
    );
    eprintln!("{c:?}");
}
