//! The cell runners of `spinr sweep`: image fits (`--task inr`), planted networks
//! (`--task plant`) and classifiers (`--task classify`), each by spinr's IHT, the paper's IHT or IMP, with the same library calls
//! as `spinr fit` and `spinr plant`. A row is the command's report minus the cell's own
//! columns (method, m, s, seed), with the model's actual size as `weights`.

use super::super::fit::checkpoints::ImpSaver;
use super::super::fit::{FitTuning, ImageArgs};
use super::super::DeviceArgs;
use crate::backend;
use crate::checkpoint::{check_run, ImpCheckpoint};
use crate::classify::binary::{Device, LayerEpoch, Trained};
use crate::classify::report::{evaluate, report};
use crate::classify::{ClassTask, ClassifyOptions, ClassifyPlan};
use crate::data::Split;
use crate::error::{Error, Result};
use crate::iht::{IhtChoices, Task as IhtTask, Variant};
use crate::imp::{ImpDevice, ImpResume, RoundReport};
use crate::inr::fit::{
    self as inr_fit, FitOptions, FitPlan, FitReport, ImageFit, Method as FitMethod,
};
use crate::inr::planes::{self, Colour, PlanesPlan};
use crate::inr::Image;
use crate::plant::{self, PlantReport, PlantSpec};
use crate::sweep::{report_fields, Cell, CellRunner, Method, Row};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The round-boundary checkpoint of one IMP run of a sweep, in the sweep's folder: a sweep
/// restarted after an interrupt continues an unfinished IMP run from its last boundary instead
/// of its first round (the finished cells it skips anyway). `sweep.json` already refuses a
/// restart with other options, so the run's name (task and cell group) identifies it.
pub struct ImpSaves {
    path: Option<PathBuf>,
    saver: ImpSaver,
}

/// Where an IMP run goes on from, and what was saved with it.
type Resumed = Option<(ImpResume, serde_json::Value)>;

impl ImpSaves {
    /// The checkpoint of run `name` in `dir` (the sweep's folder; `None`: no checkpoints),
    /// and where the run goes on from if an earlier sweep left it unfinished.
    fn open(dir: Option<&Path>, name: String) -> Result<(Self, Resumed)> {
        let path = dir.map(|d| d.join(format!("imp-{name}.checkpoint.safetensors")));
        let run = serde_json::json!({ "sweep_imp_run": name });
        let (mut earlier, mut resumed) = (0.0, None);
        if let Some(p) = path.as_ref().filter(|p| p.exists()) {
            let c = ImpCheckpoint::load(p)?;
            check_run(&c.run, &run).map_err(|msg| Error::Checkpoint {
                path: p.clone(),
                msg,
            })?;
            eprintln!(
                "spinr: resuming an IMP run at round {} from {}",
                c.resume.round,
                p.display()
            );
            earlier = c.seconds;
            resumed = Some((c.resume, c.extra));
        }
        let saver = ImpSaver::new(path.clone(), run, earlier);
        Ok((ImpSaves { path, saver }, resumed))
    }

    fn save(&self, r: &ImpResume, extra: serde_json::Value) -> Result<()> {
        self.saver.save(r, extra)
    }

    /// The run is over (its rows are saved): nothing to resume.
    fn finish(&self) -> Result<()> {
        match &self.path {
            Some(p) if p.exists() => std::fs::remove_file(p).map_err(|e| Error::Io {
                path: p.clone(),
                msg: format!("cannot remove a finished IMP run's checkpoint: {e}"),
            }),
            _ => Ok(()),
        }
    }
}

/// How a sweep method maps onto `spinr fit`/`spinr plant`'s `--method` and `--variant`.
fn method_variant(m: Method) -> (FitMethod, Variant) {
    match m {
        Method::Iht => (FitMethod::Iht, Variant::Spinr),
        Method::Paper => (FitMethod::Iht, Variant::Paper),
        Method::Imp => (FitMethod::Imp, Variant::Spinr),
    }
}

/// A report as a row: the cell's columns dropped, `nonzeros` (the model's actual size, which
/// for IMP is at most the cell's s) renamed `weights`.
fn row<T: serde::Serialize>(report: &T) -> Result<Row> {
    Ok(report_fields(report)?
        .into_iter()
        // A colour fit's per-plane details stay in `spinr fit`'s report.json: a CSV cell holds
        // one value.
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "method" | "neurons" | "seed" | "out_dir" | "planes"
            )
        })
        .map(|(k, v)| {
            if k == "nonzeros" {
                ("weights".to_string(), v)
            } else {
                (k, v)
            }
        })
        .collect())
}

/// The cells of an IMP group still waiting for their network: each takes the first round at
/// or below its s, saved as soon as that round is trained.
struct ImpRows<'d> {
    /// Largest s first: rounds shrink the network.
    waiting: Vec<Cell>,
    done: &'d mut dyn FnMut(&Cell, Row) -> Result<()>,
    failure: Option<Error>,
}

impl<'d> ImpRows<'d> {
    fn new(cells: &[Cell], done: &'d mut dyn FnMut(&Cell, Row) -> Result<()>) -> Self {
        let mut waiting = cells.to_vec();
        waiting.sort_by_key(|c| std::cmp::Reverse(c.nonzeros));
        Self {
            waiting,
            done,
            failure: None,
        }
    }

    /// Saves the rows (made by `row`) of the cells a round of `nonzeros` weights answers;
    /// `Break` (ending the IMP run) on the first error, which [`ImpRows::finish`] returns.
    fn round(
        &mut self,
        nonzeros: usize,
        mut row: impl FnMut(&Cell) -> Result<Row>,
    ) -> ControlFlow<()> {
        while let Some(cell) = self
            .waiting
            .first()
            .filter(|c| c.nonzeros >= nonzeros)
            .copied()
        {
            self.waiting.remove(0);
            if let Err(e) = row(&cell).and_then(|r| (self.done)(&cell, r)) {
                self.failure = Some(e);
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    }

    fn finish(self) -> Result<()> {
        self.failure.map_or(Ok(()), Err)
    }
}

/// Runs one group: IMP once for all of its s, any other method cell by cell.
fn run_cells(
    cells: &[Cell],
    done: &mut dyn FnMut(&Cell, Row) -> Result<()>,
    imp: impl FnOnce(&mut ImpRows) -> Result<()>,
    mut one: impl FnMut(&Cell) -> Result<Row>,
) -> Result<()> {
    if cells.first().is_some_and(|c| c.method == Method::Imp) {
        let mut rows = ImpRows::new(cells, done);
        imp(&mut rows)?;
        return rows.finish();
    }
    for cell in cells {
        let row = one(cell)?;
        done(cell, row)?;
    }
    Ok(())
}

/// Runs `--task inr` cells on one image.
pub struct InrRunner {
    pub image_path: PathBuf,
    pub image: Image,
    pub tuning: FitTuning,
    pub device: DeviceArgs,
    /// Where IMP runs keep their checkpoints (the sweep's folder).
    pub imp_checkpoints: Option<PathBuf>,
}

impl InrRunner {
    pub fn new(
        path: PathBuf,
        which: &ImageArgs,
        tuning: FitTuning,
        device: DeviceArgs,
    ) -> anyhow::Result<Self> {
        let image = which.load(&path)?;
        Ok(Self {
            image_path: path,
            image,
            tuning,
            device,
            imp_checkpoints: None,
        })
    }

    fn options(&self, cell: &Cell) -> FitOptions {
        let (method, variant) = method_variant(cell.method);
        let mut o = self.tuning.options(
            method,
            variant,
            cell.neurons,
            cell.nonzeros,
            cell.seed,
            self.image.channels,
        );
        // A time budget and DCT terms are for the IHT cells, as the other IHT flags are.
        if method == inr_fit::Method::Imp {
            o.time_budget = None;
            o.dct_share = None;
        }
        o
    }

    fn plan(&self, cell: &Cell) -> Result<FitPlan> {
        self.options(cell).plan(&self.image)
    }

    /// One fit on this runner's backend choice.
    fn fit(&self, image: &Image, plan: &FitPlan) -> Result<ImageFit> {
        let problem = plan.problem(image)?;
        let mut be = backend::create_for(
            self.device.backend,
            self.device.adapter.as_deref(),
            problem.clone(),
            plan.capacity(),
            plan.minibatch(),
        )?;
        inr_fit::fit_iht(image, plan, &problem, be.as_mut(), |_| {
            ControlFlow::Continue(())
        })
    }

    fn report(&self, plan: &FitPlan, fit: &ImageFit) -> Result<Row> {
        let name = self.image_path.display().to_string();
        let mut report = FitReport::start(&name, plan, &fit.backend, "");
        report.finish(&self.image, fit, None)?;
        row(&report)
    }

    fn iht(&self, cell: &Cell) -> Result<Row> {
        let options = self.options(cell);
        if options.colour_for(&self.image)? == Some(Colour::LumaChroma) {
            // A colour photo in luma and chroma planes, as `spinr fit` fits it.
            let pp = PlanesPlan::new(&options, &self.image)?;
            let fit = planes::fit_planes(&pp, |_, image, plan| self.fit(image, plan))?;
            let name = self.image_path.display().to_string();
            let mut report = FitReport::start_planes(&name, &pp, &fit.backend, "");
            report.finish_planes(&self.image, &fit, None)?;
            return row(&report);
        }
        let plan = options.plan(&self.image)?;
        let fit = self.fit(&self.image, &plan)?;
        self.report(&plan, &fit)
    }

    /// One IMP run for the whole group.
    fn imp(&self, rows: &mut ImpRows) -> Result<()> {
        let smallest = rows.waiting.last().expect("a group");
        let plan = self.plan(smallest)?;
        let problem = plan.problem(&self.image)?;
        let device = ImpDevice::from_choice(self.device.backend, self.device.adapter.as_deref())?;
        let (saves, resumed) = ImpSaves::open(
            self.imp_checkpoints.as_deref(),
            format!("inr-m{}-seed{}", smallest.neurons, smallest.seed),
        )?;
        let resume = resumed.map(|(r, _)| r);
        crate::imp::fit_from(
            &problem,
            &inr_fit::imp_options(&plan),
            &device,
            resume,
            |_| ControlFlow::Continue(()),
            |r| {
                rows.round(r.nonzeros, |cell| {
                    self.imp_round(*cell, r, &problem, &device)
                })
            },
            |b| saves.save(b, serde_json::Value::Null),
        )?;
        // A run cut short (a failed or interrupted row) keeps its checkpoint.
        match rows.failure {
            None => saves.finish(),
            Some(_) => Ok(()),
        }
    }

    fn imp_round(
        &self,
        cell: Cell,
        r: &RoundReport,
        problem: &crate::problem::Problem,
        device: &ImpDevice,
    ) -> Result<Row> {
        let plan = self.plan(&cell)?;
        let run = inr_fit::ImpRunSoFar {
            seconds: r.run_seconds,
            epochs: r.run_epochs,
            stopped: false,
            peak_device_bytes: r.peak_device_bytes,
            backend: device.info(),
        };
        let fit = inr_fit::imp_image_fit(&self.image, &plan, problem, &r.model(), device, run)?;
        self.report(&plan, &fit)
    }
}

impl CellRunner for InrRunner {
    fn check(&self, cell: &Cell) -> Result<()> {
        // The plan's own first check, before σ and the spectrum are read off the image.
        self.options(cell).check_sizes()
    }

    fn run_group(
        &mut self,
        cells: &[Cell],
        done: &mut dyn FnMut(&Cell, Row) -> Result<()>,
    ) -> Result<()> {
        let this = &*self;
        run_cells(cells, done, |rows| this.imp(rows), |cell| this.iht(cell))
    }
}

/// Runs `--task plant` cells: each (m, s, seed) plants its own network.
pub struct PlantRunner {
    pub inputs: usize,
    pub samples: usize,
    pub tuning: FitTuning,
    pub device: DeviceArgs,
    /// Where IMP runs keep their checkpoints (the sweep's folder).
    pub imp_checkpoints: Option<PathBuf>,
}

impl PlantRunner {
    fn iters(&self) -> usize {
        self.tuning.iters.unwrap_or(plant::DEFAULT_ITERS)
    }

    fn batch_size(&self) -> Option<usize> {
        match self.tuning.batch_size {
            Some(super::super::fit::BatchSize::Samples(b)) => Some(b),
            _ => None,
        }
    }

    fn cell(&self, cell: &Cell) -> Result<PlantReport> {
        let spec = PlantSpec {
            gates: self.tuning.gates,
            inputs: self.inputs,
            neurons: cell.neurons,
            nonzeros: cell.nonzeros,
            samples: self.samples,
            seed: cell.seed,
        };
        let (method, variant) = method_variant(cell.method);
        let planted = spec.build()?;
        let mut report = match method {
            FitMethod::Iht => {
                let choices = IhtChoices {
                    inner: self.tuning.inner,
                    refine: self.tuning.refine,
                    first_step: self.tuning.first_step,
                    rescue: self.tuning.rescue,
                    polish: self.tuning.polish,
                    momentum: self.tuning.momentum,
                    candidates: self.tuning.candidates,
                    grow_from: self.tuning.grow_from,
                };
                let mut cfg = choices.resolve(
                    variant,
                    IhtTask::Planted,
                    cell.nonzeros,
                    self.iters(),
                    spec.gates,
                )?;
                cfg.batch_size = self.batch_size();
                cfg.seed = cell.seed;
                let mut be = backend::create_for(
                    self.device.backend,
                    self.device.adapter.as_deref(),
                    planted.train.clone(),
                    cfg.pool(planted.train.signal_len()),
                    cfg.batch_size.is_some(),
                )?;
                let info = be.info();
                let start = Instant::now();
                let fit = plant::run(be.as_mut(), &planted, &cfg, |_| {})?;
                let seconds = start.elapsed().as_secs_f64();
                let mut report =
                    plant::score_iht(&spec, &planted, &fit, info.kind, &info.adapter, seconds)?;
                report.peak_device_bytes = be.memory().peak_bytes;
                report
            }
            FitMethod::Imp => {
                let device =
                    ImpDevice::from_choice(self.device.backend, self.device.adapter.as_deref())?;
                let (saves, resumed) = ImpSaves::open(
                    self.imp_checkpoints.as_deref(),
                    format!(
                        "plant-m{}-s{}-seed{}",
                        cell.neurons, cell.nonzeros, cell.seed
                    ),
                )?;
                let resume = resumed.map(|(r, _)| r);
                let report = plant::run_imp_from(
                    &spec,
                    &planted,
                    self.iters(),
                    self.batch_size(),
                    &device,
                    resume,
                    |_| ControlFlow::Continue(()),
                    |b| saves.save(b, serde_json::Value::Null),
                )?;
                saves.finish()?;
                report
            }
        };
        report.method = method;
        report.variant = variant;
        Ok(report)
    }
}

impl CellRunner for PlantRunner {
    fn check(&self, cell: &Cell) -> Result<()> {
        if method_variant(cell.method).0 == FitMethod::Imp {
            return Ok(());
        }
        crate::problem::check_sizes(self.samples, self.inputs, cell.neurons)?;
        crate::problem::check_nonzeros(cell.nonzeros, cell.neurons, self.inputs)
    }

    fn run_group(
        &mut self,
        cells: &[Cell],
        done: &mut dyn FnMut(&Cell, Row) -> Result<()>,
    ) -> Result<()> {
        // Each (m, s, seed) plants its own network: IMP too runs per cell.
        for cell in cells {
            let report = self.cell(cell)?;
            done(cell, row(&report)?)?;
        }
        Ok(())
    }
}

/// Runs `--task classify` cells: IHT (spinr's or the paper's) per cell; IMP once per (m, seed)
/// group, a row for each s as its round is reached.
pub struct ClassifyRunner {
    pub data_path: PathBuf,
    pub split: Split,
    pub options: ClassifyOptions,
    pub device: Device,
    /// Where IMP runs keep their checkpoints (the sweep's folder).
    pub imp_checkpoints: Option<PathBuf>,
}

impl ClassifyRunner {
    fn plan(&self, cell: &Cell) -> Result<ClassifyPlan> {
        let (method, variant) = method_variant(cell.method);
        let plan = ClassifyOptions {
            method,
            variant,
            neurons: Some(cell.neurons),
            nonzeros: Some(cell.nonzeros),
            seed: cell.seed,
            ..self.options.clone()
        }
        .plan()?;
        Ok(plan)
    }

    fn iht(&self, cell: &Cell) -> Result<Row> {
        let plan = self.plan(cell)?;
        let split = plan.select(&self.split)?;
        let go = |_: &LayerEpoch| ControlFlow::Continue(());
        let t = match plan.task {
            ClassTask::Binary => crate::classify::binary::train(&plan, &split, &self.device, go)?,
            ClassTask::Multiclass => {
                crate::classify::multiclass::train(&plan, &split, &self.device, go)?
            }
        };
        row(&report(&plan, &split, &t, &self.data_path))
    }

    /// One IMP run for the whole group; every row also gets the dense network's accuracy.
    fn imp(&self, rows: &mut ImpRows) -> Result<()> {
        let smallest = rows.waiting.last().expect("a group");
        let plan = self.plan(smallest)?;
        let split = plan.select(&self.split)?;
        let device = ImpDevice::from_choice(self.device.backend, self.device.adapter.as_deref())?;
        let info = device.info();
        let (saves, resumed) = ImpSaves::open(
            self.imp_checkpoints.as_deref(),
            format!("classify-m{}-seed{}", smallest.neurons, smallest.seed),
        )?;
        // Every row carries the dense network's accuracy (round 0): a resumed run has it
        // from its checkpoint.
        let (resume, mut dense_accuracy) = match resumed {
            Some((r, extra)) => (Some(r), extra["dense_test_accuracy"].as_f64()),
            None => (None, None),
        };
        let dense_cell = std::cell::Cell::new(dense_accuracy);
        crate::classify::imp::train_from(
            &plan,
            &split,
            &device,
            resume,
            |r| {
                let net = crate::classify::imp::network(&plan, &r.model());
                let dense =
                    *dense_accuracy.get_or_insert_with(|| evaluate(&net, &split.test).accuracy);
                dense_cell.set(Some(dense));
                let t = Trained {
                    net,
                    seconds: r.run_seconds,
                    peak_device_bytes: r.peak_device_bytes,
                    backend: info.clone(),
                    epochs: r.run_epochs,
                    stopped: false,
                };
                rows.round(r.nonzeros, |cell| {
                    let mut rep = report(&self.plan(cell)?, &split, &t, &self.data_path);
                    rep.dense_test_accuracy = Some(dense);
                    row(&rep)
                })
            },
            |b| {
                saves.save(
                    b,
                    serde_json::json!({ "dense_test_accuracy": dense_cell.get() }),
                )
            },
        )?;
        // A run cut short (a failed or interrupted row) keeps its checkpoint.
        match rows.failure {
            None => saves.finish(),
            Some(_) => Ok(()),
        }
    }
}

impl CellRunner for ClassifyRunner {
    fn check(&self, cell: &Cell) -> Result<()> {
        let plan = self.plan(cell)?;
        if plan.method == FitMethod::Imp {
            return Ok(());
        }
        // From the whole split, not `plan.select`'s copy of it: selecting keeps `d`, and a
        // multiclass task keeps every class.
        let train = &self.split.train;
        let outputs = match plan.task {
            ClassTask::Binary => 0,
            ClassTask::Multiclass => train.classes.max(2),
        };
        plan.check_capacity(train.d, outputs)
    }

    fn run_group(
        &mut self,
        cells: &[Cell],
        done: &mut dyn FnMut(&Cell, Row) -> Result<()>,
    ) -> Result<()> {
        let this = &*self;
        run_cells(cells, done, |rows| this.imp(rows), |cell| this.iht(cell))
    }
}
