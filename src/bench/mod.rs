//! Throughput measurement for `spinr bench` and `cargo bench`: problem sizes (`size`), a
//! hyperfine-style timer (`timer`: warm-up, median/min/max, outliers, device timestamps),
//! per-call FLOP and byte models (`work`), a call-counting backend wrapper (`counting`) and the
//! run over every kernel and a whole IHT step (`run`). The device's ceilings come from the
//! backend ([`crate::backend::Profiler::ceilings`]).

mod counting;
mod run;
mod size;
mod timer;
mod work;

pub use counting::{CallCounts, Counting};
pub use run::{run_kernels, BenchOptions, KernelReport};
pub use size::{BenchProblem, BenchSize};
pub use timer::{DeviceTimes, Timing};
pub use work::{Work, WorkModel};
