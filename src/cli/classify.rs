//! `spinr classify`: train a sparse classifier on MNIST-style IDX data or CIFAR-10, or predict
//! labels with a saved one (`--predict MODEL IMAGES`).

use super::{progress, DeviceArgs};
use crate::classify::binary::{self, Device, Trained};
use crate::classify::model::{self as cmodel, ClassifierModel};
use crate::classify::report::{evaluate, report};
use crate::classify::{ClassTask, ClassifyOptions, ClassifyPlan};
use crate::data::{self, Split};
use crate::error::{Error, Param};
use crate::iht::{FirstStep, IhtChoices, Refine, Variant};
use crate::inr::fit::Method;
use clap::Args;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

pub const MODEL_FILE: &str = "model.safetensors";
pub const REPORT_FILE: &str = "report.json";

/// The flag of `spinr classify` that sets each quantity.
pub fn flag(p: Param) -> Option<&'static str> {
    Some(match p {
        Param::Samples => "--data",
        Param::Inputs => "--input-scale",
        Param::Neurons => "--neurons",
        Param::Nonzeros => "--nonzeros",
        Param::BatchSize => "--batch-size",
        Param::Iters => "--epochs",
        Param::Inner => "--inner",
        Param::Layers => "--layers",
        Param::Method => "--method",
        Param::Backend => "--backend",
        _ => return None,
    })
}

#[derive(Args, Debug)]
#[command(group = clap::ArgGroup::new("what").required(true).args(["data", "predict"]))]
pub struct ClassifyArgs {
    /// An IDX image file (labels beside it), a folder with an IDX pair or MNIST's four files,
    /// or a CIFAR-10 binary folder. A single pair splits 80/20: the first 8 000 of the 10 000
    /// digits in assets/mnist train, the last 2 000 test.
    #[arg(long, value_name = "DIR|FILE")]
    pub data: Option<PathBuf>,
    /// binary (classes 0 and 1, one output) or multiclass (every class).
    #[arg(long, value_enum, default_value = "binary")]
    pub task: ClassTask,
    /// Hidden neurons m (default 100).
    #[arg(long, short = 'm')]
    pub neurons: Option<usize>,
    /// Nonzero weights s over all layers (default: binary 200, multiclass 1000).
    #[arg(long, short = 's')]
    pub nonzeros: Option<usize>,
    /// Epochs per layer (default: binary 15, multiclass 50).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Samples per update (default: binary 1000, multiclass 5000).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Layers, trained one after the other with s/L nonzeros each.
    #[arg(long, default_value_t = 1)]
    pub layers: usize,
    /// iht or imp (the dense baseline, pruned).
    #[arg(long, value_enum, default_value = "iht")]
    pub method: Method,
    /// spinr or paper (raw 0–255 inputs, Armijo refinement).
    #[arg(long, value_enum, default_value = "spinr")]
    pub variant: Variant,
    /// Multiplies the raw 0–255 pixel values (default: 1/255; the paper's variant: 1).
    #[arg(long)]
    pub input_scale: Option<f32>,
    /// Refinement steps K per IHT step (default 10).
    #[arg(long)]
    pub inner: Option<usize>,
    #[arg(long, value_enum)]
    pub refine: Option<Refine>,
    #[arg(long, value_enum)]
    pub first_step: Option<FirstStep>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Output folder (default: beside the data, DATA-STEM-TASK.spinr-out).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Overwrite the outputs of an earlier run.
    #[arg(long)]
    pub force: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Predict with a saved model: MODEL IMAGES (an IDX image file or a CIFAR-10 batch);
    /// prints one label per line.
    #[arg(long, num_args = 2, value_names = ["MODEL", "IMAGES"])]
    pub predict: Option<Vec<PathBuf>>,
}

impl ClassifyArgs {
    fn options(&self) -> ClassifyOptions {
        ClassifyOptions {
            task: self.task,
            method: self.method,
            variant: self.variant,
            neurons: self.neurons,
            nonzeros: self.nonzeros,
            epochs: self.epochs,
            batch_size: self.batch_size,
            layers: self.layers,
            input_scale: self.input_scale,
            iht: IhtChoices {
                inner: self.inner,
                refine: self.refine,
                first_step: self.first_step,
                rescue: None,
                polish: None,
                momentum: None,
                candidates: None,
                grow_from: None,
            },
            seed: self.seed,
        }
    }
}

fn default_out(data: &Path, task: ClassTask) -> PathBuf {
    let name = data
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "data".into());
    let stem = name.strip_suffix(".gz").unwrap_or(&name);
    let stem = stem.strip_suffix(".bin").unwrap_or(stem);
    data.with_file_name(format!("{stem}-{}.spinr-out", task.as_str()))
}

pub fn run(a: ClassifyArgs) -> anyhow::Result<()> {
    if let Some(p) = &a.predict {
        return predict(&p[0], &p[1]);
    }
    let data_path = a.data.clone().expect("clap requires --data or --predict");
    progress::install_interrupt_handler("stopping after this epoch and saving the model so far");
    let plan = a.options().plan()?;
    let split = plan.select(&data::load(&data_path)?)?;
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| default_out(&data_path, plan.task));
    if !a.force && out.join(MODEL_FILE).exists() {
        return Err(Error::arg(
            "--force",
            format!(
                "{} already exists; pass --force to overwrite it or --out to write elsewhere",
                out.join(MODEL_FILE).display()
            ),
        )
        .into());
    }
    std::fs::create_dir_all(&out).map_err(|e| Error::Io {
        path: out.clone(),
        msg: format!("cannot create the output folder: {e} (choose another with --out)"),
    })?;
    eprintln!(
        "spinr: classify {} ({}): {} train, {} test samples of {} features; {} m={} s={} \
         layers={} epochs={} batches of {}",
        data_path.display(),
        plan.task.as_str(),
        split.train.n(),
        split.test.n(),
        split.train.d,
        plan.method.as_str(),
        plan.neurons,
        plan.nonzeros,
        plan.layers,
        plan.epochs,
        plan.batch_size
    );
    let (trained, dense) = train(&a, &plan, &split)?;
    let model = ClassifierModel {
        task: plan.task,
        classes: split.train.classes.max(trained.net.outputs()),
        net: trained.net.clone(),
    };
    cmodel::save(&model, &out.join(MODEL_FILE))?;
    let mut report = report(&plan, &split, &trained, &data_path);
    report.dense_test_accuracy = dense.map(|net| evaluate(&net, &split.test).accuracy);
    let mut json = serde_json::to_vec_pretty(&report)?;
    json.push(b'\n');
    crate::output::write_bytes(&out.join(REPORT_FILE), &json)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} {}: test accuracy {:.2}% (train {:.2}%), {} nonzeros, {:.1} s on {} ({})",
            report.task.as_str(),
            report.method.as_str(),
            100.0 * report.test_accuracy,
            100.0 * report.train_accuracy,
            report.nonzeros,
            report.seconds,
            report.backend,
            report.adapter
        );
        if let Some(acc) = report.dense_test_accuracy {
            println!(
                "  dense reference (the unpruned network): test accuracy {:.2}%",
                100.0 * acc
            );
        }
        println!(
            "  confusion (rows true, columns predicted): {:?}",
            report.confusion
        );
        println!("  wrote {}", out.join(MODEL_FILE).display());
        println!("  wrote {}", out.join(REPORT_FILE).display());
    }
    if report.stopped {
        return Err(Error::Interrupted.into());
    }
    Ok(())
}

/// Trains the classifier; IMP also gives its dense reference (the unpruned network).
fn train(
    a: &ClassifyArgs,
    plan: &ClassifyPlan,
    split: &Split,
) -> anyhow::Result<(Trained, Option<crate::classify::net::SparseNet>)> {
    let device = Device {
        backend: a.device.backend,
        adapter: a.device.adapter.clone(),
    };
    match (plan.task, plan.method) {
        (ClassTask::Binary, Method::Iht) => {
            let bar = progress::bar((plan.epochs * plan.layers) as u64, "epochs");
            let verbose = super::verbose();
            let t = binary::train(plan, split, &device, |e| {
                bar.inc(1);
                bar.set_message(format!("layer {} loss {:.4e}", e.layer, e.report.mse()));
                if verbose {
                    bar.suspend(|| {
                        eprintln!(
                            "layer {} epoch {:4}  mse {:.6e}",
                            e.layer,
                            e.report.epoch,
                            e.report.mse()
                        )
                    });
                }
                if progress::stop_requested() {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })?;
            bar.finish_and_clear();
            a.device.announce(&t.backend);
            Ok((t, None))
        }
        (ClassTask::Multiclass, Method::Iht) => {
            let bar = progress::bar((plan.epochs * plan.layers) as u64, "epochs");
            let verbose = super::verbose();
            let t = crate::classify::multiclass::train(plan, split, &device, |e| {
                bar.inc(1);
                bar.set_message(format!("layer {} loss {:.4}", e.layer, e.report.loss));
                if verbose {
                    bar.suspend(|| {
                        eprintln!(
                            "layer {} epoch {:4}  cross-entropy {:.6}",
                            e.layer, e.report.epoch, e.report.loss
                        )
                    });
                }
                if progress::stop_requested() {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })?;
            bar.finish_and_clear();
            Ok((t, None))
        }
        (_, Method::Imp) => {
            let rounds = crate::classify::imp::rounds(plan, split);
            let bar = progress::bar(rounds as u64, "rounds");
            let verbose = super::verbose();
            let imp_device =
                crate::imp::ImpDevice::from_choice(device.backend, device.adapter.as_deref())?;
            let t = crate::classify::imp::train(plan, split, &imp_device, |r| {
                bar.inc(1);
                bar.set_message(format!("{} weights, loss {:.4e}", r.nonzeros, r.loss));
                if verbose {
                    bar.suspend(|| {
                        eprintln!(
                            "round {:3}  {:8} weights  loss {:.6e}",
                            r.round, r.nonzeros, r.loss
                        )
                    });
                }
                if progress::stop_requested() {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })?;
            bar.finish_and_clear();
            a.device.announce(&t.trained.backend);
            Ok((t.trained, Some(t.dense)))
        }
    }
}

/// `--predict MODEL IMAGES`: one predicted label per line on stdout.
fn predict(model_path: &Path, images: &Path) -> anyhow::Result<()> {
    let model = cmodel::load(model_path)?;
    let raw = if data::idx::is_idx(images, 3) {
        data::idx::read(images, 3)?
    } else if images.extension().is_some_and(|e| e == "bin") {
        let ds = data::cifar::read_batch(images)?;
        data::idx::Idx {
            dims: vec![ds.n(), ds.d],
            data: ds.x,
        }
    } else {
        return Err(Error::Data {
            path: images.to_path_buf(),
            msg: "not an IDX image file (…idx3-ubyte[.gz]) or a CIFAR-10 batch (.bin)".into(),
        }
        .into());
    };
    if raw.item_len() != model.net.inputs() {
        return Err(Error::Data {
            path: images.to_path_buf(),
            msg: format!(
                "{} values per image, but the model takes {}",
                raw.item_len(),
                model.net.inputs()
            ),
        }
        .into());
    }
    let labels = model.net.predict(&raw.data);
    let mut out = String::with_capacity(labels.len() * 2);
    for l in labels {
        out.push_str(&l.to_string());
        out.push('\n');
    }
    print!("{out}");
    Ok(())
}
