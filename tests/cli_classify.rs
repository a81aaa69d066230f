//! `spinr classify` as a user runs it: the real binary on the MNIST digits in assets/, the
//! report read back strictly, predictions, and malformed data refused with exit code 2.

mod common;

use std::io::Write;
use std::path::Path;

#[derive(serde::Deserialize, Debug)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Report {
    task: String,
    method: String,
    variant: String,
    neurons: usize,
    nonzeros: usize,
    layers: usize,
    epochs: usize,
    batch_size: usize,
    input_scale: f32,
    train_accuracy: f64,
    test_accuracy: f64,
    test_loss: f64,
    confusion: Vec<Vec<u64>>,
    train_samples: usize,
    test_samples: usize,
    seconds: f64,
    peak_device_bytes: u64,
    backend: String,
    adapter: String,
    seed: u64,
    data: String,
    stopped: bool,
    dense_test_accuracy: Option<f64>,
    spinr_version: String,
}

fn classify(dir: &Path, extra: &[&str]) -> Report {
    let data = common::mnist();
    let mut args = vec![
        "classify",
        "--data",
        data.to_str().unwrap(),
        "--backend",
        "cpu",
        "--out",
        "out",
        "--force",
        "--json",
    ];
    args.extend(extra);
    common::json(&common::spinr_in(dir, &args))
}

#[test]
fn binary_iht_separates_zeros_from_ones_with_200_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let r = classify(tmp.path(), &["--task", "binary", "-s", "200"]);
    assert!(r.test_accuracy >= 0.99, "{r:?}");
    assert!(
        r.nonzeros <= 200 && r.dense_test_accuracy.is_none(),
        "{r:?}"
    );
    let total: u64 = r.confusion.iter().flatten().sum();
    assert_eq!(total as usize, r.test_samples);
    // The saved model predicts the same labels the report scored.
    let images = common::mnist();
    let model = tmp.path().join("out/model.safetensors");
    let out = common::spinr_in(
        tmp.path(),
        &[
            "classify",
            "--predict",
            model.to_str().unwrap(),
            images.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", common::stderr(&out));
    let labels: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert_eq!(labels.len(), 10_000);
    assert!(labels.iter().all(|l| *l == "0" || *l == "1"));
}

#[test]
fn multiclass_iht_learns_with_a_hundred_weights() {
    // A support of output weights alone (the plain top-s of the initial values) stays at
    // chance, 10%; spinr's start gives units an input and an output.
    let tmp = tempfile::tempdir().unwrap();
    let r = classify(
        tmp.path(),
        &["--task", "multiclass", "-s", "100", "--epochs", "4"],
    );
    assert!(r.test_accuracy > 0.3, "{r:?}");
    assert_eq!(r.confusion.len(), 10);
}

#[test]
fn imp_reports_its_dense_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let r = classify(
        tmp.path(),
        &[
            "--task", "binary", "--method", "imp", "-m", "8", "-s", "500", "--epochs", "2",
        ],
    );
    assert_eq!(r.method, "imp");
    assert!(r.nonzeros <= 500, "{r:?}");
    let dense = r
        .dense_test_accuracy
        .expect("IMP reports the dense network");
    assert!((0.0..=1.0).contains(&dense));
}

#[test]
fn malformed_data_exits_2_and_names_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Images and labels that disagree on the count, and a truncated image file.
    let write = |name: &str, bytes: &[u8]| {
        let mut f = std::fs::File::create(dir.join(name)).unwrap();
        f.write_all(bytes).unwrap();
    };
    let mut images = vec![0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 2];
    images.extend([0u8; 12]);
    write("a-images-idx3-ubyte", &images);
    write("a-labels-idx1-ubyte", &[0, 0, 8, 1, 0, 0, 0, 2, 0, 1]);
    write("b-images-idx3-ubyte", &images[..20]);
    write("b-labels-idx1-ubyte", &[0, 0, 8, 1, 0, 0, 0, 3, 0, 1, 0]);
    for name in [
        "a-images-idx3-ubyte",
        "b-images-idx3-ubyte",
        "missing-idx3-ubyte",
    ] {
        let out = common::spinr_in(dir, &["classify", "--data", name, "--backend", "cpu"]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{name}: {}",
            common::stderr(&out)
        );
        let err = common::stderr(&out);
        assert!(
            err.contains(&name[..2]) && !err.contains("panicked"),
            "{err}"
        );
    }
}
