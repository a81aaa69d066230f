//! `spinr bench` and `spinr devices` as a user runs them, JSON read back strictly. Runs the GPU
//! side on whatever adapter wgpu finds (lavapipe in CI): these prove the plumbing, not speed.

use std::process::Command;

#[derive(serde::Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct Size {
    n: usize,
    d: usize,
    m: usize,
    s: usize,
}

#[derive(serde::Deserialize, Debug)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Timing {
    runs: usize,
    median: f64,
    min: f64,
    max: f64,
    mean: f64,
    stddev: f64,
    outliers: usize,
}

#[derive(serde::Deserialize, Debug)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Kernel {
    name: String,
    seconds: Timing,
    timer: String,
    wall_seconds: Timing,
    device: Option<DeviceTimes>,
    flops: f64,
    bytes: f64,
    gflops_per_second: f64,
    gbytes_per_second: f64,
    fraction_of_flops_ceiling: f64,
    fraction_of_bandwidth_ceiling: f64,
}

#[derive(serde::Deserialize, Debug)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct DeviceTimes {
    submissions: f64,
    dispatch_gap_seconds: f64,
    submission_gap_seconds: f64,
    kernels: Vec<EntryTime>,
}

#[derive(serde::Deserialize, Debug)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct EntryTime {
    name: String,
    dispatches: u64,
    seconds: f64,
}

#[derive(serde::Deserialize, Debug)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Ceilings {
    bytes_per_second: f64,
    flops_per_second: f64,
    method: String,
}

#[derive(serde::Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct Report {
    adapter: String,
    backend: String,
    size: Size,
    ceilings: Option<Ceilings>,
    kernels: Vec<Kernel>,
    step_seconds: Option<f64>,
    step: Option<Kernel>,
    peak_device_bytes: u64,
    compare: Option<Box<Report>>,
    step_ratio: Option<f64>,
}

#[derive(serde::Deserialize, Debug)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Adapter {
    name: String,
    vendor: u32,
    device: u32,
    device_type: String,
    backend: String,
    driver: String,
    driver_info: String,
    max_storage_buffer_binding_size: u64,
    max_buffer_size: u64,
    max_compute_workgroup_storage_size: u32,
    max_compute_invocations_per_workgroup: u32,
    subgroup_min_size: u32,
    subgroup_max_size: u32,
    shader_f32_atomic: bool,
    timestamp_query: bool,
    subgroups: bool,
}

fn spinr(args: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_spinr"))
        .args(args)
        .current_dir(dir.path())
        .output()
        .unwrap()
}

fn check(r: &Report, backend: &str) {
    assert_eq!(r.backend, backend);
    assert!(!r.adapter.is_empty());
    assert_eq!((r.size.n, r.size.d, r.size.m, r.size.s), (400, 64, 20, 100));
    let c = r.ceilings.as_ref().unwrap();
    assert!(
        c.bytes_per_second > 1e6 && c.flops_per_second > 1e6,
        "{c:?}"
    );
    let names: Vec<&str> = r.kernels.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(names, ["forward", "step_size", "trial", "dense_pass_topk"]);
    for k in r.kernels.iter().chain(r.step.as_ref()) {
        assert!(
            k.seconds.median > 0.0 && k.seconds.min <= k.seconds.median,
            "{k:?}"
        );
        assert!(k.seconds.median <= k.seconds.max && k.flops > 0.0, "{k:?}");
        assert!(k.fraction_of_flops_ceiling > 0.0, "{k:?}");
        assert!(k.wall_seconds.median > 0.0, "{k:?}");
        match (k.timer.as_str(), &k.device) {
            ("wall clock", None) => assert_eq!(k.seconds.median, k.wall_seconds.median),
            ("gpu timestamps", Some(d)) => {
                assert_eq!(backend, "gpu");
                assert!(d.submissions >= 1.0 && !d.kernels.is_empty(), "{k:?}");
                assert!(d.kernels.iter().all(|e| e.dispatches > 0), "{k:?}");
                // Device busy time cannot exceed the wall clock of the same call by much.
                assert!(k.seconds.median <= 1.5 * k.wall_seconds.max, "{k:?}");
            }
            _ => panic!("timer {} with device {:?}", k.timer, k.device),
        }
    }
    assert!(r.step_seconds.unwrap() > 0.0);
    assert!(r.peak_device_bytes > 0);
}

#[test]
fn bench_json_on_the_cpu_compared_with_the_gpu() {
    let out = spinr(&[
        "bench",
        "--backend",
        "cpu",
        "--compare",
        "gpu",
        "--size",
        "400,64,20,100",
        "--runs",
        "2",
        "--warmup",
        "1",
        "--budget",
        "0",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Report = serde_json::from_slice(&out.stdout).unwrap();
    check(&r, "cpu");
    let g = r.compare.as_ref().unwrap();
    check(g, "gpu");
    assert!(g.compare.is_none());
    let ratio = r.step_ratio.unwrap();
    let want = r.step_seconds.unwrap() / g.step_seconds.unwrap();
    assert!((ratio - want).abs() <= 1e-9 * want, "{ratio} vs {want}");
}

#[test]
fn bench_rejects_bad_sizes() {
    for size in ["tiny", "1,2,3", "10,3,4,5", "10,4,2,9"] {
        let out = spinr(&["bench", "--backend", "cpu", "--size", size]);
        assert_eq!(out.status.code(), Some(2), "{size}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("--size"));
    }
}

#[test]
fn devices_json_lists_the_adapters() {
    let out = spinr(&["devices", "--json"]);
    assert!(out.status.success());
    let list: Vec<Adapter> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        !list.is_empty(),
        "no GPU adapter: install one (`apt-get install mesa-vulkan-drivers` gives lavapipe)"
    );
    assert!(list
        .iter()
        .all(|a| !a.name.is_empty() && a.max_buffer_size > 0));
}
