//! Options of the GPU backend beyond the trait's: tuning knobs, measurement aids, and the
//! switches tests use to force each code path. The library never reads them from the
//! environment; the CLI does (`cli::gpu_options`).

use crate::backend::DEFAULT_FEATURE_CACHE;

/// Runtime checks naga adds to the kernels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ShaderChecks {
    /// Bounds checks on, loop bounding off (a 64-bit counter in every loop iteration; the
    /// H100 measurements are in benches/NOTES.md).
    #[default]
    Bounds,
    /// wgpu's default: bounds checks and loop bounding.
    All,
    /// No checks at all (a measurement aid).
    None,
}

impl ShaderChecks {
    pub(crate) fn wgpu(self) -> wgpu::ShaderRuntimeChecks {
        match self {
            ShaderChecks::Bounds => {
                let mut c = wgpu::ShaderRuntimeChecks::checked();
                c.force_loop_bounding = false;
                c
            }
            ShaderChecks::All => wgpu::ShaderRuntimeChecks::checked(),
            ShaderChecks::None => wgpu::ShaderRuntimeChecks::unchecked(),
        }
    }
}

/// The order in which the support passes visit a support's entries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SupportOrder {
    /// Neuron by neuron (its runs; a gate decides a whole run): each entry reads its feature.
    #[default]
    Neuron,
    /// Feature by feature (`apply_f`): each feature of a sample is read or generated once
    /// per pass, however many neurons use it, at the cost of a gate test per entry and of
    /// sorting the support into per-feature lists once per support. Not yet measured on
    /// hardware (benches/NOTES.md), so not the default.
    Feature,
}

/// Options beyond the trait's (tests use them to force the on-the-fly feature path).
#[derive(Clone, Copy, Debug)]
pub struct GpuOptions {
    /// Largest grid-feature matrix, in bytes, that is materialised on the device (grid
    /// features are then loaded instead of evaluating sin/cos).
    pub feature_cache_bytes: u64,
    /// Device memory the backend may use (its buffers are counted before any is created);
    /// `u64::MAX`: only the adapter's limits.
    pub device_budget: u64,
    /// Neurons per dense-pass tile (rounded up to a multiple of 8); `None`: about 128 Ki
    /// candidates per tile. Small tiles exercise the streaming merge.
    pub tile_neurons: Option<usize>,
    /// Caps the bytes of one feature-matrix binding below the device's limit (the matrix is
    /// then split by rows across up to four bindings; tests use it to exercise that path).
    pub feature_binding_bytes: Option<u64>,
    /// Threads the support apply aims for: with fewer samples it splits the support's runs
    /// into chunks (up to 64) whose partial predictions are then merged. `None`: 65536 on a
    /// GPU, one thread per sample on a CPU adapter (whose few cores gain nothing from it).
    pub apply_threads: Option<usize>,
    /// How `apply` visits the support (`SPINR_SUPPORT_ORDER=feature|neuron` in the CLI).
    pub support_order: SupportOrder,
    /// Use subgroup operations where the device has 32-wide subgroups (false: the portable
    /// workgroup-memory path everywhere; tests compare the two).
    pub subgroups: bool,
    /// Store dense features feature-major (full-batch fits: coalesced reads) rather than
    /// sample-major (minibatch fits: a thread's features of one scattered sample in one row).
    pub feature_major: bool,
    /// Active samples per dense-pass chunk (rounded up to a multiple of 32); `None`: 2^18.
    /// Small chunks exercise the accumulation across chunks.
    pub mask_chunk: Option<usize>,
    /// Runtime checks compiled into the kernels.
    pub shader_checks: ShaderChecks,
    /// Submit and wait for every dispatch alone and time it on the wall clock, per entry point
    /// ([`crate::backend::Profiler::dispatch_profile`]): slow, for finding hot kernels where
    /// the adapter has no timestamp queries.
    pub profile_dispatches: bool,
    /// A test aid: report a lost device after this many device checks, to exercise what a
    /// fit does when its GPU fails.
    pub fail_after_checks: Option<usize>,
    /// Samples per block when per-sample data (feature rows, targets, predictions) moves
    /// between host and device; `None`: 16 MiB worth. Small blocks exercise the block seams.
    pub move_block_samples: Option<usize>,
}

impl Default for GpuOptions {
    fn default() -> Self {
        Self {
            feature_cache_bytes: DEFAULT_FEATURE_CACHE,
            device_budget: u64::MAX,
            tile_neurons: None,
            feature_binding_bytes: None,
            apply_threads: None,
            support_order: SupportOrder::Neuron,
            mask_chunk: None,
            subgroups: true,
            feature_major: true,
            shader_checks: ShaderChecks::default(),
            profile_dispatches: false,
            fail_after_checks: None,
            move_block_samples: None,
        }
    }
}
