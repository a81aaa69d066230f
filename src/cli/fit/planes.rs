//! `spinr fit` of a colour image in luma and chroma planes ([`crate::inr::planes`]): three
//! gray IHT fits one after the other, each with its own progress bar and checkpoints.
//!
//! A finished plane's model is saved as `plane-NAME.safetensors` in the output folder and the
//! checkpoint of the plane being fitted records which planes are done (`ImageRun::planes_done`),
//! so `--resume` reads the finished planes back and goes on with the current one. A fit
//! stopped before its last plane saves the planes not yet fitted as their mean (the
//! constant feature), so `model.safetensors` always renders. When the fit finishes, the plane
//! files and the checkpoint are removed: `model.safetensors` holds all three planes.

use super::checkpoints::{self, DonePlane, ImageRun, Saved};
use super::{
    fit_iht, print_and_finish, start_job, FitArgs, Job, Stage, MODEL_FILE, RECONSTRUCTION_FILE,
};
use crate::backend::BackendInfo;
use crate::error::Error;
use crate::inr::fit::{FitOptions, FitPlan, FitReport};
use crate::inr::planes::{PlaneFit, PlanesFit, PlanesModel, PlanesPlan, PLANES};
use crate::inr::{Image, ImageModel};
use crate::model;
use std::path::{Path, PathBuf};

/// Where a finished plane's model waits for the others.
fn plane_file(out_dir: &Path, p: usize) -> PathBuf {
    out_dir.join(format!("plane-{}.safetensors", PLANES[p]))
}

/// The plane files a luma-chroma fit may leave in `out_dir` while it runs.
pub(super) fn plane_files(out_dir: &Path) -> Vec<PathBuf> {
    (0..3).map(|p| plane_file(out_dir, p)).collect()
}

/// Says on stderr which plane (`p`) is being fitted, and how.
pub(super) fn announce_plane(a: &FitArgs, p: usize, plan: &FitPlan, info: &BackendInfo) {
    if p == 0 {
        a.device.announce(info);
    }
    eprintln!(
        "spinr: plane {} of 3, {}: m={} s={}{} σ={}{}{} on {} ({}), {}",
        p + 1,
        PLANES[p],
        plan.spec.neurons,
        plan.cfg.s + plan.dct_terms,
        super::terms_text(plan.cfg.s, plan.dct_terms),
        super::sigma_text(&plan.spec.sigma),
        if plan.sigma_auto {
            " (read off the plane)"
        } else {
            ""
        },
        super::frequency_text(plan),
        info.kind,
        info.adapter,
        super::batch_text(plan),
    );
}

pub(super) fn run(
    a: &FitArgs,
    path: PathBuf,
    which: super::ImageArgs,
    image: Image,
    options: FitOptions,
    resume: Option<(Saved, ImageRun)>,
) -> anyhow::Result<()> {
    let pp = PlanesPlan::new(&options, &image)?;
    let done: Vec<DonePlane> = resume
        .as_ref()
        .and_then(|(_, r)| r.planes_done.clone())
        .unwrap_or_default();
    if done.len() >= 3 {
        // Checkpoints are written while a plane is fitted, so at most two are ever done.
        return Err(Error::Checkpoint {
            path: a
                .resume
                .clone()
                .unwrap_or_default()
                .join(checkpoints::CHECKPOINT_FILE),
            msg: "it records all three planes as done, which no fit writes; start over \
                  without --resume"
                .into(),
        }
        .into());
    }
    let mut run = ImageRun::new(&path, &which, &image, &options);
    run.planes_done = Some(done.clone());
    // The luma plane has the most nonzeros; every plane has as many samples.
    let (job, out_dir) = start_job(a, path, run, resume, &pp.plans[0])?;
    let fit = fit_all(a, &job, &pp, &out_dir, done)?;

    let model = fit.model();
    let model_path = out_dir.join(MODEL_FILE);
    model::save_planes(&model, &model_path)?;
    fit.recon.save_png(&out_dir.join(RECONSTRUCTION_FILE))?;
    let model_bytes = super::file_size(&model_path)?;
    let mut report = FitReport::start_planes(
        &job.path.display().to_string(),
        &pp,
        &fit.backend,
        &out_dir.display().to_string(),
    );
    report.finish_planes(&image, &fit, Some(model_bytes))?;
    print_and_finish(a, &job, &image, &out_dir, &report, model_bytes)
}

/// The three plane fits: the planes done before a resume read back, the current one resumed,
/// the rest fitted; placeholders after a stop.
fn fit_all(
    a: &FitArgs,
    job: &Job,
    pp: &PlanesPlan,
    out_dir: &Path,
    mut done: Vec<DonePlane>,
) -> anyhow::Result<PlanesFit> {
    let first = done.len();
    eprintln!(
        "spinr: fitting {} ({}×{} colour, {} pixels) in luma and chroma planes: s = {} = {}, m = {}, {}",
        job.path.display(),
        pp.images[0].height,
        pp.images[0].width,
        pp.images[0].data.len(),
        pp.plans.iter().map(|p| p.cfg.s).sum::<usize>(),
        pp.plans.iter().map(|p| p.cfg.s.to_string()).collect::<Vec<_>>().join(" + "),
        pp.plans.iter().map(|p| p.spec.neurons.to_string()).collect::<Vec<_>>().join(" + "),
        match pp.plans[0].cfg.time_budget {
            Some(b) => format!("epochs re-planned as they go to fit a time budget of {b:.1} s"),
            None => format!("{} epochs each", pp.plans[0].cfg.iters),
        },
    );
    let mut planes: Vec<PlaneFit> = Vec::with_capacity(3);
    // What the whole fit held at most, the planes of earlier runs included.
    let mut peak = done.iter().map(|d| d.peak_device_bytes).max().unwrap_or(0);
    for (p, d) in done.iter().enumerate() {
        let m = read_plane(out_dir, p, &pp.plans[p])?;
        let recon = m.render(
            a.device.backend,
            a.device.adapter.as_deref(),
            m.height,
            m.width,
        )?;
        planes.push(PlaneFit::new(
            m,
            recon,
            &pp.images[p],
            d.iterations,
            d.seconds,
        ));
    }
    let (mut stopped, mut info) = (false, None);
    for p in first..3 {
        let image = &pp.images[p];
        let before: f64 = done.iter().map(|d| d.seconds).sum();
        // Under a time budget, this plane's share of what the planes before it left.
        let plan = &*pp.plane_plan(p, before);
        if stopped {
            planes.push(PlaneFit::placeholder(plan, image));
            continue;
        }
        let resumed = job.resume.as_ref().filter(|_| p == first);
        let mut run = job.run.clone();
        run.planes_done = Some(done.clone());
        let so_far = &planes;
        let save_best = |m: &ImageModel| {
            let path = out_dir.join(MODEL_FILE);
            model::save_planes(&joined(pp, so_far, m), &path).map(|()| path)
        };
        let report = |info: &BackendInfo| {
            FitReport::start_planes(
                &job.path.display().to_string(),
                pp,
                info,
                &out_dir.display().to_string(),
            )
        };
        let stage = Stage {
            resume: resumed,
            // A checkpoint counts the earlier planes' time too.
            earlier: resumed.map_or(0.0, |c| (c.seconds() - before).max(0.0)),
            saver_earlier: resumed.map_or(before, Saved::seconds),
            run: checkpoints::describe(&run),
            report: &report,
            save_best: &save_best,
        };
        let plane_job = Job {
            path: job.path.clone(),
            run,
            resume: None,
            memory: job.memory,
        };
        let f = fit_iht(a, &plane_job, image, plan, out_dir, stage)?;
        stopped = f.stopped;
        peak = f.peak_device_bytes.max(peak);
        info.get_or_insert(f.backend.clone());
        if !stopped {
            model::save(&f.model, &plane_file(out_dir, p))?;
            done.push(DonePlane {
                iterations: f.iterations,
                seconds: f.seconds,
                peak_device_bytes: f.peak_device_bytes,
            });
        }
        planes.push(PlaneFit::of(f, image));
    }
    // At least the last plane ran: a checkpoint never has all three done (`run`).
    let info = info.expect("a plane ran");
    Ok(PlanesFit::new(planes, stopped, info, peak))
}

/// The model of the planes fitted so far, `current` (the plane being fitted) and
/// placeholders for the rest.
fn joined(pp: &PlanesPlan, so_far: &[PlaneFit], current: &ImageModel) -> PlanesModel {
    let k = so_far.len();
    PlanesModel {
        planes: std::array::from_fn(|p| match p {
            _ if p < k => so_far[p].model.clone(),
            _ if p == k => current.clone(),
            _ => crate::inr::planes::placeholder(&pp.plans[p], &pp.images[p]),
        }),
    }
}

/// A finished plane's model, checked against the plane's plan.
fn read_plane(out_dir: &Path, p: usize, plan: &FitPlan) -> anyhow::Result<ImageModel> {
    let path = plane_file(out_dir, p);
    if !path.exists() {
        return Err(Error::Checkpoint {
            path: out_dir.join(checkpoints::CHECKPOINT_FILE),
            msg: format!(
                "the checkpoint is of a later plane but {} is missing; start over without \
                 --resume",
                path.display()
            ),
        }
        .into());
    }
    let m = model::load(&path)?;
    if m.spec != plan.spec || (m.height, m.width, m.channels) != (plan.height, plan.width, 1) {
        return Err(Error::Model {
            path,
            msg: "this plane was fitted with other options than the checkpoint's; start over \
                  without --resume"
                .into(),
        }
        .into());
    }
    Ok(m)
}
