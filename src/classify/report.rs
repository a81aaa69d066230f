//! Evaluation of a trained classifier and `spinr classify`'s report (its keys are a contract).

use super::SparseNet;
use crate::data::Dataset;
use serde::{Deserialize, Serialize};

/// `confusion[true][predicted]` counts.
pub fn confusion(labels: &[u8], predicted: &[u8], classes: usize) -> Vec<Vec<u64>> {
    let mut m = vec![vec![0u64; classes]; classes];
    for (&t, &p) in labels.iter().zip(predicted) {
        if (t as usize) < classes && (p as usize) < classes {
            m[t as usize][p as usize] += 1;
        }
    }
    m
}

/// Accuracy and loss of a network on a dataset.
#[derive(Clone, Debug)]
pub struct Evaluation {
    pub accuracy: f64,
    /// Mean squared error of the score against the 0/1 label (one output) or mean softmax
    /// cross-entropy (several outputs).
    pub loss: f64,
    pub confusion: Vec<Vec<u64>>,
}

pub fn evaluate(net: &SparseNet, ds: &Dataset) -> Evaluation {
    let c = net.outputs();
    let scores = net.scores(&ds.x);
    let predicted = net.predict(&ds.x);
    let n = ds.n().max(1) as f64;
    let correct = predicted
        .iter()
        .zip(&ds.labels)
        .filter(|(p, l)| p == l)
        .count();
    let loss = if c == 1 {
        scores
            .iter()
            .zip(&ds.labels)
            .map(|(&s, &l)| (s as f64 - l as f64).powi(2))
            .sum::<f64>()
            / n
    } else {
        scores
            .chunks(c)
            .zip(&ds.labels)
            .map(|(r, &l)| {
                let max = r.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
                let lse = max + r.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln();
                lse - r[l as usize] as f64
            })
            .sum::<f64>()
            / n
    };
    Evaluation {
        accuracy: correct as f64 / n,
        loss,
        confusion: confusion(&ds.labels, &predicted, ds.classes.max(c)),
    }
}

/// What `spinr classify --json` prints and writes to `report.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifyReport {
    pub task: super::ClassTask,
    pub method: crate::inr::fit::Method,
    pub variant: crate::iht::Variant,
    pub neurons: usize,
    /// Nonzero weights of the trained network (all layers, output weights included).
    pub nonzeros: usize,
    pub layers: usize,
    pub epochs: usize,
    pub batch_size: usize,
    pub input_scale: f32,
    pub train_accuracy: f64,
    pub test_accuracy: f64,
    pub test_loss: f64,
    /// `confusion[true][predicted]` on the test set.
    pub confusion: Vec<Vec<u64>>,
    pub train_samples: usize,
    pub test_samples: usize,
    pub seconds: f64,
    pub peak_device_bytes: u64,
    pub backend: String,
    pub adapter: String,
    pub seed: u64,
    pub data: String,
    pub stopped: bool,
    /// IMP: test accuracy of its first round, the dense network before pruning.
    pub dense_test_accuracy: Option<f64>,
    pub spinr_version: String,
}

/// The report of a trained classifier, evaluated on both halves of `split`.
pub fn report(
    plan: &super::ClassifyPlan,
    split: &crate::data::Split,
    t: &super::binary::Trained,
    data: &std::path::Path,
) -> ClassifyReport {
    let tr = evaluate(&t.net, &split.train);
    let te = evaluate(&t.net, &split.test);
    ClassifyReport {
        task: plan.task,
        method: plan.method,
        variant: plan.variant,
        neurons: plan.neurons,
        nonzeros: t.net.nonzeros(),
        layers: t.net.layers.len(),
        epochs: t.epochs,
        batch_size: plan.batch_size,
        input_scale: plan.input_scale,
        train_accuracy: tr.accuracy,
        test_accuracy: te.accuracy,
        test_loss: te.loss,
        confusion: te.confusion,
        train_samples: split.train.n(),
        test_samples: split.test.n(),
        seconds: t.seconds,
        peak_device_bytes: t.peak_device_bytes,
        backend: t.backend.kind.to_string(),
        adapter: t.backend.adapter.clone(),
        seed: plan.seed,
        data: data.display().to_string(),
        stopped: t.stopped,
        dense_test_accuracy: None,
        spinr_version: env!("CARGO_PKG_VERSION").to_string(),
    }
}
