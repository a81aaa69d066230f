//! `spinr bench`: device ceilings, then every kernel and a whole IHT step, in one run.

use super::DeviceArgs;
use crate::backend::{self, BackendChoice, Ceilings};
use crate::bench::{self, BenchOptions, BenchProblem, BenchSize, KernelReport, Timing};
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// small (28×28 digit INR: n=784, d=1500, m=200, s=1000), large (512×512 image: n=262144,
    /// d=512, m=2048, s=20000) or N,D,M,S.
    #[arg(long, default_value = "small")]
    pub size: String,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Also run the same problem on this backend in the same run and print the time ratio.
    #[arg(long, value_enum, value_name = "BACKEND")]
    pub compare: Option<BackendChoice>,
    /// Untimed runs before measuring each kernel.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Timed runs per kernel (at least; more while under --budget).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Seconds of timed runs per kernel after --runs are done.
    #[arg(long, default_value_t = 1.0)]
    pub budget: f64,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON to this file, rewritten after every kernel.
    #[arg(long, value_name = "FILE")]
    pub export_json: Option<PathBuf>,
}

/// What `spinr bench --json` prints.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BenchReport {
    pub adapter: String,
    pub backend: String,
    pub size: BenchSize,
    pub ceilings: Option<Ceilings>,
    pub kernels: Vec<KernelReport>,
    pub step_seconds: Option<f64>,
    pub step: Option<KernelReport>,
    pub peak_device_bytes: u64,
    pub compare: Option<Box<BenchReport>>,
    /// This run's step time over the compared backend's (`< 1`: faster).
    pub step_ratio: Option<f64>,
}

fn export(path: &Option<PathBuf>, r: &BenchReport) -> anyhow::Result<()> {
    if let Some(p) = path {
        crate::output::write_bytes(p, serde_json::to_string_pretty(r)?.as_bytes())?;
    }
    Ok(())
}

fn measure(
    choice: BackendChoice,
    adapter: Option<&str>,
    bp: &BenchProblem,
    opt: BenchOptions,
    quiet: bool,
    export_to: &Option<PathBuf>,
) -> anyhow::Result<BenchReport> {
    let mut b = backend::create_with(
        choice,
        adapter,
        bp.problem.clone(),
        bp.size.s,
        super::gpu_options(false),
        backend::DEFAULT_FEATURE_CACHE,
    )?;
    let info = b.info();
    if !quiet {
        eprintln!(
            "spinr bench: {} on {} ({})",
            size_text(bp.size),
            info.kind,
            info.adapter
        );
    }
    let ceilings = b.ceilings()?.unwrap_or(Ceilings {
        bytes_per_second: f64::NAN,
        flops_per_second: f64::NAN,
        method: "not measured on this backend".into(),
    });
    if !quiet {
        println!(
            "ceilings: {:.1} GB/s copy, {:.1} GFLOP/s ({})",
            ceilings.bytes_per_second / 1e9,
            ceilings.flops_per_second / 1e9,
            ceilings.method
        );
        println!(
            "{:<16} {:>11} {:>23} {:>11} {:>10} {:>9} {:>8} {:>8}",
            "kernel", "median", "min … max", "wall", "GFLOP/s", "GB/s", "%flops", "%bw"
        );
    }
    let mut report = BenchReport {
        adapter: info.adapter.clone(),
        backend: info.kind.to_string(),
        size: bp.size,
        ceilings: Some(ceilings.clone()),
        kernels: Vec::new(),
        step_seconds: None,
        step: None,
        peak_device_bytes: 0,
        compare: None,
        step_ratio: None,
    };
    let mut export_err = None;
    let (kernels, step) = bench::run_kernels(b.as_mut(), bp, &ceilings, opt, |k| {
        if !quiet {
            print_row(k);
        }
        report.kernels.push(k.clone());
        if let Err(e) = export(export_to, &report) {
            export_err.get_or_insert(e);
        }
    })?;
    if let Some(e) = export_err {
        return Err(e);
    }
    report.kernels = kernels;
    if !quiet {
        print_device(&report.kernels, &step);
    }
    report.step_seconds = Some(step.seconds.median);
    report.step = Some(step);
    report.peak_device_bytes = b.memory().peak_bytes;
    super::print_dispatch_profile(b.as_ref());
    Ok(report)
}

fn size_text(s: BenchSize) -> String {
    format!("n={} d={} m={} s={}", s.n, s.d, s.m, s.s)
}

fn fmt_time(t: f64) -> String {
    if t >= 1.0 {
        format!("{t:.3} s")
    } else if t >= 1e-3 {
        format!("{:.3} ms", t * 1e3)
    } else {
        format!("{:.1} µs", t * 1e6)
    }
}

/// Where the device time of each call went (timestamp runs only).
fn print_device(kernels: &[KernelReport], step: &KernelReport) {
    if step.device.is_none() {
        println!("(no timestamp queries on this backend: times are wall clock)");
        return;
    }
    println!("\ndevice time per call (timestamps; 'host' = device idle between submissions):");
    println!(
        "{:<16} {:>11} {:>11} {:>11} {:>8}  top entry points",
        "call", "busy", "host", "launch", "submits"
    );
    for k in kernels.iter().chain(std::iter::once(step)) {
        let Some(d) = &k.device else { continue };
        let mut top: Vec<_> = d.kernels.iter().collect();
        top.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
        let top: Vec<String> = top
            .iter()
            .take(4)
            .map(|t| format!("{} {}×{}", t.name, t.dispatches, fmt_time(t.seconds)))
            .collect();
        println!(
            "{:<16} {:>11} {:>11} {:>11} {:>8.1}  {}",
            k.name,
            fmt_time(k.seconds.median),
            fmt_time(d.submission_gap_seconds),
            fmt_time(d.dispatch_gap_seconds),
            d.submissions,
            top.join(", ")
        );
    }
}

fn print_row(k: &KernelReport) {
    let t: &Timing = &k.seconds;
    println!(
        "{:<16} {:>11} {:>23} {:>11} {:>10.2} {:>9.2} {:>7.1}% {:>7.1}%",
        k.name,
        fmt_time(t.median),
        format!("{} … {}", fmt_time(t.min), fmt_time(t.max)),
        fmt_time(k.wall_seconds.median),
        k.gflops_per_second,
        k.gbytes_per_second,
        100.0 * k.fraction_of_flops_ceiling,
        100.0 * k.fraction_of_bandwidth_ceiling
    );
    if t.outliers > 0 {
        eprintln!(
            "warning: {}: {} of {} runs were statistical outliers; close other programs or raise --warmup",
            k.name, t.outliers, t.runs
        );
    }
}

/// The flag of `spinr bench` that sets each quantity.
pub fn flag(p: crate::error::Param) -> Option<&'static str> {
    use crate::error::Param;
    match p {
        Param::Samples | Param::Inputs | Param::Neurons | Param::Nonzeros | Param::Size => {
            Some("--size")
        }
        _ => None,
    }
}

pub fn run(a: BenchArgs) -> anyhow::Result<()> {
    let size = BenchSize::parse(&a.size)?;
    if a.runs == 0 {
        return Err(crate::Error::arg("--runs", "need at least one timed run").into());
    }
    if !(a.budget.is_finite() && a.budget >= 0.0) {
        return Err(
            crate::Error::arg("--budget", "must be a non-negative number of seconds").into(),
        );
    }
    let opt = BenchOptions {
        warmup: a.warmup,
        min_runs: a.runs,
        max_runs: 1000,
        budget: Duration::from_secs_f64(a.budget),
    };
    let bp = BenchProblem::new(size)?;
    let mut report = measure(
        a.device.backend,
        a.device.adapter.as_deref(),
        &bp,
        opt,
        a.json,
        &a.export_json,
    )?;
    if !a.json {
        println!(
            "peak device memory: {:.1} MiB",
            report.peak_device_bytes as f64 / (1 << 20) as f64
        );
    }
    if let Some(other) = a.compare {
        if !a.json {
            println!();
        }
        let cmp = measure(other, a.device.adapter.as_deref(), &bp, opt, a.json, &None)?;
        let ratio = report.step_seconds.unwrap_or(f64::NAN) / cmp.step_seconds.unwrap_or(f64::NAN);
        if !a.json {
            println!(
                "\nIHT step: {} on {} vs {} on {}: ratio {:.3} ({:.2}× {})",
                fmt_time(report.step_seconds.unwrap_or(f64::NAN)),
                report.backend,
                fmt_time(cmp.step_seconds.unwrap_or(f64::NAN)),
                cmp.backend,
                ratio,
                if ratio < 1.0 { 1.0 / ratio } else { ratio },
                if ratio < 1.0 { "faster" } else { "slower" }
            );
        }
        report.step_ratio = Some(ratio);
        report.compare = Some(Box::new(cmp));
    }
    export(&a.export_json, &report)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}
