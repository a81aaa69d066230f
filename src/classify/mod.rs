//! Classification with sparse ReLU networks (the paper's MNIST experiments).
//!
//! - `binary`: two classes, one output. The model is spinr's fused network
//!   `f(x) = Σ_j relu(w_j · x)` fitted by IHT to 0/1 labels by least squares (exactly the
//!   image model, on pixel features), predicted class 1 when `f(x) ≥ 0.5`.
//! - `multiclass`: `C` outputs from a shared hidden layer, `f(x) = W2ᵀ relu(W1 x)`, with one
//!   sparse vector holding `W1` (m·d) and then `W2` (m·C), softmax cross-entropy
//!   (`multiclass.rs`).
//! - Deeper networks (`layers > 1`) are trained layer by layer with `s/L` nonzeros each: a
//!   trained layer becomes the fixed features `relu(X W1ᵀ)` of the next (`net.rs`).
//!
//! Evaluation runs on the host: a sparse forward pass costs `n·s`.

pub mod binary;
pub mod imp;
pub mod model;
pub mod multiclass;
pub mod net;
pub mod report;

use crate::data::{Dataset, Split};
use crate::error::{Error, Param, Result};
use crate::iht::{IhtChoices, Variant};
use crate::inr::fit::Method;
use serde::{Deserialize, Serialize};

pub use net::{Layer, SparseNet};
pub use report::{confusion, ClassifyReport};

/// Which classification problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClassTask {
    /// Digits 0 and 1 (the first two classes): one output, threshold 0.5.
    Binary,
    /// Every class: one output per class, softmax cross-entropy.
    Multiclass,
}

impl ClassTask {
    pub fn as_str(self) -> &'static str {
        match self {
            ClassTask::Binary => "binary",
            ClassTask::Multiclass => "multiclass",
        }
    }
}

/// What a user chooses; `None` takes the task's and variant's default.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassifyOptions {
    pub task: ClassTask,
    pub method: Method,
    pub variant: Variant,
    pub neurons: Option<usize>,
    pub nonzeros: Option<usize>,
    pub epochs: Option<usize>,
    pub batch_size: Option<usize>,
    pub layers: usize,
    /// Multiplies the raw 0–255 pixel values (`None`: 1/255 for spinr, 1 (raw) for the paper).
    pub input_scale: Option<f32>,
    pub iht: IhtChoices,
    pub seed: u64,
}

impl Default for ClassifyOptions {
    fn default() -> Self {
        Self {
            task: ClassTask::Binary,
            method: Method::Iht,
            variant: Variant::Spinr,
            neurons: None,
            nonzeros: None,
            epochs: None,
            batch_size: None,
            layers: 1,
            input_scale: None,
            iht: IhtChoices::default(),
            seed: 0,
        }
    }
}

/// The paper's settings per task (from its code): binary m up to 1000, minibatches of 1000,
/// 15 epochs; multiclass minibatches of 5000, 50 epochs.
pub struct TaskDefaults {
    pub neurons: usize,
    pub nonzeros: usize,
    pub epochs: usize,
    pub batch_size: usize,
}

pub fn task_defaults(task: ClassTask) -> TaskDefaults {
    match task {
        ClassTask::Binary => TaskDefaults {
            neurons: 100,
            nonzeros: 200,
            epochs: 15,
            batch_size: 1000,
        },
        ClassTask::Multiclass => TaskDefaults {
            neurons: 100,
            nonzeros: 1000,
            epochs: 50,
            batch_size: 5000,
        },
    }
}

/// Every default resolved and checked.
#[derive(Clone, Debug)]
pub struct ClassifyPlan {
    pub task: ClassTask,
    pub method: Method,
    pub variant: Variant,
    pub neurons: usize,
    pub nonzeros: usize,
    pub epochs: usize,
    pub batch_size: usize,
    pub layers: usize,
    pub input_scale: f32,
    pub iht: IhtChoices,
    pub seed: u64,
}

impl ClassifyOptions {
    pub fn plan(&self) -> Result<ClassifyPlan> {
        let t = task_defaults(self.task);
        let plan = ClassifyPlan {
            task: self.task,
            method: self.method,
            variant: self.variant,
            neurons: self.neurons.unwrap_or(t.neurons),
            nonzeros: self.nonzeros.unwrap_or(t.nonzeros),
            epochs: self.epochs.unwrap_or(t.epochs),
            batch_size: self.batch_size.unwrap_or(t.batch_size),
            layers: self.layers,
            input_scale: self.input_scale.unwrap_or(match self.variant {
                Variant::Spinr => 1.0 / 255.0,
                Variant::Paper => 1.0,
            }),
            iht: self.iht,
            seed: self.seed,
        };
        if plan.layers == 0 || plan.layers > 8 {
            return Err(Error::invalid(Param::Layers, "between 1 and 8 layers"));
        }
        if plan.nonzeros < plan.layers {
            return Err(Error::invalid(
                Param::Nonzeros,
                format!(
                    "s = {} cannot give each of {} layers a nonzero",
                    plan.nonzeros, plan.layers
                ),
            ));
        }
        if plan.neurons == 0 {
            return Err(Error::invalid(Param::Neurons, "at least one neuron"));
        }
        if plan.epochs == 0 {
            return Err(Error::invalid(Param::Iters, "at least one epoch"));
        }
        if plan.batch_size == 0 {
            return Err(Error::invalid(Param::BatchSize, "at least one sample"));
        }
        if !(plan.input_scale.is_finite() && plan.input_scale > 0.0) {
            return Err(Error::invalid(
                Param::Inputs,
                "the input scale must be a positive number",
            ));
        }
        Ok(plan)
    }
}

impl ClassifyPlan {
    /// `s` of layer `l` (the last one takes what the division leaves).
    pub fn layer_nonzeros(&self, l: usize) -> usize {
        let per = self.nonzeros / self.layers;
        if l + 1 == self.layers {
            self.nonzeros - per * (self.layers - 1)
        } else {
            per
        }
    }

    /// Checks that every layer can hold its share of `s` ([`Self::layer_nonzeros`]): layer
    /// `l` has `m·d_l` weights (`d_0` = the data's `inputs`, then `d_l = m`) plus `m·outputs`
    /// output weights where the task trains them (multiclass). A share beyond that would
    /// silently fit fewer nonzeros than asked.
    pub fn check_capacity(&self, inputs: usize, outputs: usize) -> Result<()> {
        for l in 0..self.layers {
            let d = if l == 0 { inputs } else { self.neurons };
            let room = self.neurons.saturating_mul(d + outputs);
            let share = self.layer_nonzeros(l);
            if share > room {
                let weights = if outputs > 0 {
                    format!(
                        "m·(d + C) = {room} weights ({} neurons, {d} inputs, {outputs} outputs)",
                        self.neurons
                    )
                } else {
                    format!(
                        "m·d = {room} weights ({} neurons × {d} inputs)",
                        self.neurons
                    )
                };
                let msg = if self.layers == 1 {
                    format!("s = {share} is out of range: the network has only {weights}")
                } else {
                    format!(
                        "layer {} of {} takes {share} of s = {} nonzeros but has only {weights}",
                        l + 1,
                        self.layers,
                        self.nonzeros
                    )
                };
                return Err(Error::invalid(
                    Param::Nonzeros,
                    format!("{msg}; lower --nonzeros or raise --neurons"),
                ));
            }
        }
        Ok(())
    }

    /// The samples this task uses: binary keeps the first two classes.
    pub fn select(&self, split: &Split) -> Result<Split> {
        match self.task {
            ClassTask::Multiclass => Ok(split.clone()),
            ClassTask::Binary => {
                let s = Split {
                    train: split.train.select_classes(&[0, 1]),
                    test: split.test.select_classes(&[0, 1]),
                };
                if s.train.n() == 0 || s.test.n() == 0 {
                    return Err(Error::invalid(
                        Param::Samples,
                        "no samples of classes 0 and 1 in the training or test set",
                    ));
                }
                Ok(s)
            }
        }
    }

    /// Features of a dataset as floats: raw values times the input scale, sample-major.
    pub fn features(&self, ds: &Dataset) -> Vec<f32> {
        ds.x.iter().map(|&v| v as f32 * self.input_scale).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(neurons: usize, nonzeros: usize, layers: usize) -> ClassifyPlan {
        ClassifyOptions {
            neurons: Some(neurons),
            nonzeros: Some(nonzeros),
            layers,
            ..Default::default()
        }
        .plan()
        .unwrap()
    }

    #[test]
    fn every_layer_must_hold_its_share_of_the_nonzeros() {
        // One layer: m·d (binary), m·(d + C) (multiclass), exactly full is fine.
        assert!(plan(2, 1568, 1).check_capacity(784, 0).is_ok());
        let e = plan(2, 1569, 1).check_capacity(784, 0).unwrap_err();
        assert!(e.to_string().contains("m·d = 1568"), "{e}");
        assert!(plan(2, 1588, 1).check_capacity(784, 10).is_ok());
        assert!(plan(2, 1589, 1).check_capacity(784, 10).is_err());
        // Two layers of 3 neurons: the second has 3·3 weights for its half of s.
        assert!(plan(3, 18, 2).check_capacity(784, 0).is_ok());
        let e = plan(3, 20, 2).check_capacity(784, 0).unwrap_err();
        assert!(e.to_string().contains("layer 2 of 2 takes 10"), "{e}");
        assert!(matches!(
            e,
            Error::Invalid {
                param: Param::Nonzeros,
                ..
            }
        ));
    }
}
