//! `spinr plant` as a user runs it: the real binary, JSON read back strictly, exit codes.

mod common;

use common::spinr;

#[derive(serde::Deserialize, Debug)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Report {
    method: String,
    variant: String,
    gates: String,
    backend: String,
    adapter: String,
    inputs: usize,
    neurons: usize,
    nonzeros: usize,
    samples: usize,
    outputs: usize,
    seed: u64,
    recovered: bool,
    relative_error: f64,
    support_errors: usize,
    train_psnr: f64,
    test_psnr: f64,
    iterations: usize,
    seconds: f64,
    peak_device_bytes: u64,
}

#[test]
fn plant_json_reports_recovery() {
    let out = spinr(&[
        "plant",
        "--gates",
        "convex",
        "--inputs",
        "40",
        "--neurons",
        "10",
        "--nonzeros",
        "20",
        "--samples",
        "500",
        "--seed",
        "1",
        "--backend",
        "cpu",
        "--json",
    ]);
    let r: Report = common::json(&out);
    assert!(r.recovered, "{r:?}");
    assert_eq!((r.gates.as_str(), r.backend.as_str()), ("convex", "cpu"));
    assert!(r.relative_error < 1e-4 && r.support_errors == 0);
}

#[test]
fn plant_minibatch_recovers() {
    let out = spinr(&[
        "plant",
        "--gates",
        "convex",
        "--inputs",
        "40",
        "--neurons",
        "10",
        "--nonzeros",
        "20",
        "--samples",
        "600",
        "--batch-size",
        "300",
        "--iters",
        "30",
        "--backend",
        "cpu",
        "--json",
    ]);
    let r: Report = common::json(&out);
    assert!(r.recovered, "{r:?}");
}

#[test]
fn bad_arguments_exit_2_and_name_the_flag() {
    for (args, flag) in [
        (vec!["--nonzeros", "0"], "--nonzeros"),
        (
            vec!["--inputs", "4", "--neurons", "2", "--nonzeros", "9"],
            "--nonzeros",
        ),
        (vec!["--samples", "0"], "--samples"),
        (vec!["--neurons", "0"], "--neurons"),
        (vec!["--batch-size", "0"], "--batch-size"),
        (vec!["--outputs", "0"], "--outputs"),
        (vec!["--outputs", "10", "--gates", "convex"], "--gates"),
        (vec!["--outputs", "10", "--method", "imp"], "--method"),
        // k = 10 units of 10 outputs and at least one input each need s ≥ 110.
        (vec!["--outputs", "10", "--nonzeros", "20000"], "--nonzeros"),
    ] {
        let mut a = vec!["plant", "--backend", "cpu"];
        a.extend(args.iter());
        let out = spinr(&a);
        assert_eq!(out.status.code(), Some(2), "{a:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(flag), "{a:?}: {err}");
        assert!(out.stdout.is_empty());
    }
}

/// The vector-output planted network (the paper's Fig. 2): recovered means the fused units
/// `w1_j w2_jᵀ` match the plant to a relative error below 1e-3 with equal supports.
#[test]
fn plant_outputs_recovers_a_vector_output_network() {
    let out = spinr(&[
        "plant",
        "--outputs",
        "10",
        "--neurons",
        "20",
        "--seed",
        "0",
        "--backend",
        "cpu",
        "--json",
    ]);
    let r: Report = common::json(&out);
    assert_eq!((r.outputs, r.gates.as_str()), (10, "sequential"));
    assert!(r.recovered, "{r:?}");
    assert!(r.relative_error < 1e-3 && r.support_errors == 0, "{r:?}");
    assert!(r.test_psnr > 60.0, "{r:?}");
}
