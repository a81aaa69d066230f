//! Options of the GPU backend beyond the trait's: tuning knobs and the switches tests use to
//! force each code path.

/// Grid features are uploaded as a dense matrix when it takes at most this many bytes (and
/// fits four bindings): the kernels then load instead of evaluating sin/cos. Larger grids are
/// generated on the fly.
pub const DEFAULT_FEATURE_CACHE: u64 = 1 << 30;

/// Options beyond the trait's (tests use them to force the on-the-fly feature path).
#[derive(Clone, Copy, Debug)]
pub struct GpuOptions {
    /// Largest grid-feature matrix, in bytes, that is materialised on the device.
    pub feature_cache_bytes: u64,
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
    /// Use subgroup operations where the device has 32-wide subgroups (false: the portable
    /// workgroup-memory path everywhere; tests compare the two).
    pub subgroups: bool,
    /// Store dense features feature-major (full-batch fits: coalesced reads) rather than
    /// sample-major (minibatch fits: a thread's features of one scattered sample in one row).
    pub feature_major: bool,
    /// Active samples per dense-pass chunk (rounded up to a multiple of 32); `None`: 2^18.
    /// Small chunks exercise the accumulation across chunks.
    pub mask_chunk: Option<usize>,
}

impl Default for GpuOptions {
    fn default() -> Self {
        Self {
            feature_cache_bytes: DEFAULT_FEATURE_CACHE,
            tile_neurons: None,
            feature_binding_bytes: None,
            // A tuning knob for new hardware, without a rebuild.
            apply_threads: std::env::var("SPINR_APPLY_THREADS")
                .ok()
                .and_then(|v| v.parse().ok()),
            mask_chunk: None,
            subgroups: true,
            feature_major: true,
        }
    }
}
