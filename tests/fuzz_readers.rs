//! Fuzzes every reader of untrusted bytes in-process: model files of both kinds (`model::any_from_bytes`),
//! images (`inr::image::load_from_bytes`, PNG and JPEG mostly, the other formats too) and MNIST
//! IDX files (`inr::image::digit_from_bytes`, plain and gzip). Each mutated input must give `Ok`
//! or `Err`: never a panic, never an abort, and never a single allocation larger than a bound
//! derived from the input's size (or, for images, from the decode limits). A counting global
//! allocator records the largest allocation of each case.
//!
//! Deterministic (fixed seeds), stable Rust, well under a second in release. For a longer
//! hunt, `SPINR_FUZZ_SCALE=100 cargo test --release --test fuzz_readers` runs 100× the cases
//! (new ones: the random stream continues); `SPINR_FUZZ_DUMP=DIR` saves each failing input.

use spinr::iht::Gating;
use spinr::inr::image::{load_from_bytes, DecodeLimits};
use spinr::inr::{image as idx, Coords, ImageModel, InrSpec};
use spinr::problem::GateMode;
use spinr::sparse::SparseVec;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Cursor, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::Instant;

#[path = "fuzz/mutate.rs"]
mod mutate;
use mutate::{
    cases, fix_png_crcs, mutate, mutate_safetensors_header, set_dimensions, Rng, INTERESTING,
};

// ---- the counting allocator -------------------------------------------------------------

struct Counting;

thread_local! {
    // Per thread: the test harness runs the readers' tests in parallel, and each reader is
    // single-threaded. `const` so that touching it never allocates.
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = PEAK.try_with(|p| p.set(p.get().max(size)));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        note(l.size());
        System.alloc(l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        note(l.size());
        System.alloc_zeroed(l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        note(new);
        System.realloc(p, l, new)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

// ---- running cases ----------------------------------------------------------------------

struct Outcome {
    cases: usize,
    ok: usize,
    failures: Vec<String>,
    worst_ratio: f64,
}

/// Runs `read` on one input: catches panics and checks the largest allocation against
/// `bound(len)`.
fn run_case<T, E>(
    out: &mut Outcome,
    label: &str,
    input: &[u8],
    bound: &dyn Fn(usize) -> usize,
    read: &dyn Fn(&[u8]) -> Result<T, E>,
) {
    out.cases += 1;
    PEAK.with(|p| p.set(0));
    let result = catch_unwind(AssertUnwindSafe(|| read(input).is_ok()));
    let peak = PEAK.with(|p| p.get());
    let limit = bound(input.len());
    out.worst_ratio = out.worst_ratio.max(peak as f64 / limit as f64);
    let head: String = input.iter().take(48).map(|b| format!("{b:02x}")).collect();
    if result.is_err() || peak > limit {
        // For reproducing a failure outside the test.
        if let Some(dir) = std::env::var_os("SPINR_FUZZ_DUMP") {
            let name: String = label
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::write(Path::new(&dir).join(name), input);
        }
    }
    match result {
        Ok(ok) => out.ok += ok as usize,
        Err(_) => out
            .failures
            .push(format!("{label}: PANIC on {} bytes {head}…", input.len())),
    }
    if peak > limit {
        out.failures.push(format!(
            "{label}: allocated {peak} bytes at once (bound {limit}) on {} bytes {head}…",
            input.len()
        ));
    }
}

fn report(name: &str, out: &Outcome, start: Instant) {
    eprintln!(
        "{name}: {} cases ({} Ok) in {:.2} s, largest allocation {:.0}% of its bound",
        out.cases,
        out.ok,
        start.elapsed().as_secs_f64(),
        out.worst_ratio * 100.0
    );
    assert!(
        out.failures.is_empty(),
        "{name}: {} failures, first ones:\n{}",
        out.failures.len(),
        out.failures[..out.failures.len().min(10)].join("\n")
    );
}

fn new_outcome() -> Outcome {
    Outcome {
        cases: 0,
        ok: 0,
        failures: vec![],
        worst_ratio: 0.0,
    }
}

// ---- model files ------------------------------------------------------------------------

fn model_seeds() -> Vec<Vec<u8>> {
    let base = ImageModel {
        spec: InrSpec {
            neurons: 3,
            features: 8,
            sigma: vec![12.5, 3.0, 0.05],
            coords: Coords::Unit,
            feature_seed: 11,
            gate_seed: 7,
            gates: GateMode::Sequential,
            constant_feature: true,
            image_frequencies: Vec::new(),
        },
        height: 5,
        width: 4,
        channels: 3,
        gating: Gating::SelfGated,
        w: SparseVec::from_pairs(vec![(0, 1.5), (9, -2.25), (23, 0.125)]),
        output: None,
        dct: Default::default(),
    };
    let mut gray = base.clone();
    gray.channels = 1;
    gray.spec.sigma = vec![2.0, 2.0];
    gray.spec.coords = Coords::Pixel;
    gray.spec.gates = GateMode::Convex;
    gray.gating = Gating::Random;
    gray.w = SparseVec::from_pairs((0..24).map(|i| (i, i as f32 - 3.0)).collect());
    let mut empty = base.clone();
    empty.w = SparseVec::from_pairs(vec![]);
    // An IMP model: output weights as a second tensor.
    let mut imp = base.clone();
    imp.output = Some(vec![0.5, -1.25, 2.0]);
    // Frequencies read off an image's spectrum: a third tensor.
    let mut spectrum = base.clone();
    spectrum.spec.image_frequencies = vec![1.5, -4.0, 0.01, 0.5, 2.0, -0.03];
    // DCT terms: two more tensors.
    let mut terms = base.clone();
    terms.dct = spinr::inr::terms::DctTerms {
        indices: vec![0, 5, 59],
        values: vec![0.5, -0.25, 1e-3],
    };
    // A colour fit in planes: three one-channel models in one file.
    let mut chroma = gray.clone();
    chroma.w = SparseVec::from_pairs(vec![(12, 0.5)]);
    let planes = spinr::inr::planes::PlanesModel {
        planes: [gray.clone(), chroma.clone(), chroma],
    };
    let mut seeds: Vec<Vec<u8>> = [base, gray, empty, imp, spectrum, terms]
        .iter()
        .map(|m| spinr::model::to_bytes(m).unwrap())
        .collect();
    seeds.push(spinr::model::planes::to_bytes(&planes).unwrap());
    seeds
}

#[test]
fn fuzz_model_files() {
    let start = Instant::now();
    let seeds = model_seeds();
    let mut rng = Rng(1);
    let mut out = new_outcome();
    // Parsing builds a JSON map and two vectors, all proportional to the file.
    let bound = |len: usize| 16 * len + (64 << 10);
    let read = |b: &[u8]| spinr::model::any_from_bytes(b);
    for seed in &seeds {
        run_case(&mut out, "model seed", seed, &bound, &read);
        assert!(read(seed).is_ok());
    }
    for case in 0..cases(4000) {
        let mut data = seeds[case % seeds.len()].clone();
        let what = match case % 4 {
            0 | 1 => mutate(&mut rng, &mut data),
            2 => {
                mutate_safetensors_header(&mut rng, &mut data);
                "header number"
            }
            _ => {
                // The header length itself: huge, just past the end, or off by a little.
                let v = match rng.below(4) {
                    0 => INTERESTING[rng.below(INTERESTING.len())],
                    1 => data.len() as u64 - 7,
                    2 => 100_000_000,
                    _ => u64::from_le_bytes(data[..8].try_into().unwrap())
                        .wrapping_add(rng.below(9) as u64)
                        .wrapping_sub(4),
                };
                data[..8].copy_from_slice(&v.to_le_bytes());
                "header length"
            }
        };
        run_case(
            &mut out,
            &format!("model #{case} ({what})"),
            &data,
            &bound,
            &read,
        );
    }
    report("model files", &out, start);
}

// ---- checkpoints ------------------------------------------------------------------------

#[test]
fn fuzz_checkpoints() {
    use spinr::checkpoint::Checkpoint;
    use spinr::iht::{IhtCounters, IhtState};
    let start = Instant::now();
    let seed = Checkpoint {
        run: serde_json::json!({"neurons": 3, "sigma": [12.5, 3.0], "run": {"image": "x.png"}}),
        at: spinr::train::LoopState {
            epoch: 2,
            batch: 1,
            updates: 7,
            best_loss: Some(0.25),
            history: vec![0.5, 0.25],
            planned: None,
        },
        state: IhtState {
            w: SparseVec::from_pairs(vec![(0, 1.5), (9, -2.25), (23, 0.125)]),
            best: SparseVec::from_pairs(vec![(4, 0.5)]),
            counters: IhtCounters {
                w_empty: false,
                updates: 7,
                gating: Gating::SelfGated,
                best_gating: Gating::Random,
                rescues: 0,
                step: None,
            },
            prev: SparseVec::from_pairs(vec![(9, -2.0)]),
        },
        seconds: 3.5,
    }
    .to_bytes()
    .unwrap();
    let imp = spinr::checkpoint::ImpCheckpoint {
        run: serde_json::json!({"neurons": 3, "run": {"image": "x.png"}}),
        resume: spinr::imp::ImpResume {
            round: 1,
            masks: spinr::imp::prune::Masks {
                u: vec![true, false, true, true],
                v: vec![false, true],
            },
            rounds: vec![spinr::imp::RoundSummary {
                round: 0,
                nonzeros: 6,
                loss: 0.5,
                epochs: 2,
                seconds: 0.1,
            }],
            epochs: 2,
        },
        seconds: 0.5,
        extra: serde_json::json!({"dense_test_accuracy": 0.75}),
    }
    .to_bytes()
    .unwrap();
    let seeds = [seed, imp];
    let mut rng = Rng(5);
    let mut out = new_outcome();
    let bound = |len: usize| 16 * len + (64 << 10);
    // As `spinr fit --resume` reads them: by their format.
    let read = |b: &[u8]| -> Result<(), String> {
        match spinr::checkpoint::format_of(b).as_deref() {
            Some(spinr::checkpoint::imp::FORMAT) => {
                spinr::checkpoint::ImpCheckpoint::from_bytes(b).map(|_| ())
            }
            _ => Checkpoint::from_bytes(b).map(|_| ()),
        }
    };
    for seed in &seeds {
        run_case(&mut out, "checkpoint seed", seed, &bound, &read);
        assert!(read(seed).is_ok());
    }
    for case in 0..cases(4000) {
        let mut data = seeds[case % 2].clone();
        let what = if case % 4 < 2 {
            mutate(&mut rng, &mut data)
        } else {
            mutate_safetensors_header(&mut rng, &mut data);
            "header number"
        };
        run_case(
            &mut out,
            &format!("checkpoint #{case} ({what})"),
            &data,
            &bound,
            &read,
        );
    }
    report("checkpoints", &out, start);
}

// ---- images -----------------------------------------------------------------------------

/// Small images with structure (gradients, edges, noise) so every decoder path is exercised.
fn image_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use image::{DynamicImage, ImageBuffer, ImageFormat, Luma, Rgb, Rgba};
    let rgb = ImageBuffer::from_fn(19, 13, |x, y| {
        Rgb([(x * 13) as u8, (y * 19) as u8, ((x ^ y) * 37) as u8])
    });
    let rgba = ImageBuffer::from_fn(9, 7, |x, y| {
        Rgba([(x * 29) as u8, 200, (y * 31) as u8, (x * y * 5) as u8])
    });
    let gray = ImageBuffer::from_fn(17, 11, |x, y| Luma([((x * 7 + y * 11) % 256) as u8]));
    let gray16 = ImageBuffer::from_fn(6, 5, |x, y| Luma([(x * 10000 + y * 777) as u16]));
    let enc = |img: &DynamicImage, f: ImageFormat| {
        let mut c = Cursor::new(Vec::new());
        img.write_to(&mut c, f).unwrap();
        c.into_inner()
    };
    let (rgb, rgba, gray, gray16) = (
        DynamicImage::ImageRgb8(rgb),
        DynamicImage::ImageRgba8(rgba),
        DynamicImage::ImageLuma8(gray),
        DynamicImage::ImageLuma16(gray16),
    );
    vec![
        ("png rgb", enc(&rgb, ImageFormat::Png)),
        ("png rgba", enc(&rgba, ImageFormat::Png)),
        ("png gray", enc(&gray, ImageFormat::Png)),
        ("png gray16", enc(&gray16, ImageFormat::Png)),
        ("jpeg rgb", enc(&rgb, ImageFormat::Jpeg)),
        ("jpeg gray", enc(&gray, ImageFormat::Jpeg)),
        ("bmp", enc(&rgb, ImageFormat::Bmp)),
        ("gif", enc(&rgba, ImageFormat::Gif)),
        ("tiff", enc(&rgb, ImageFormat::Tiff)),
        ("webp", enc(&rgba, ImageFormat::WebP)),
    ]
}

/// Limits small enough that the bound is tight and a case never allocates much.
const FUZZ_LIMITS: DecodeLimits = DecodeLimits {
    max_side: 4096,
    max_pixels: 1 << 16,
};

#[test]
fn fuzz_images() {
    let start = Instant::now();
    let seeds = image_seeds();
    let mut rng = Rng(2);
    let mut out = new_outcome();
    // The decoder may hold 16 bytes per allowed pixel (RGBA f32), the float conversion as
    // much again; the rest is proportional to the file.
    let bound = |len: usize| 16 * FUZZ_LIMITS.max_pixels as usize + 64 * len + (1 << 20);
    let read = |b: &[u8]| load_from_bytes(b, &FUZZ_LIMITS);
    for (name, seed) in &seeds {
        assert!(read(seed).is_ok(), "{name} seed does not load");
    }
    for case in 0..cases(7000) {
        // PNG and JPEG get most of the cases.
        let k = match case % 10 {
            0..=3 => case % 4,
            4..=6 => 4 + case % 2,
            _ => 6 + case % 4,
        };
        let (name, seed) = &seeds[k];
        let mut data = seed.clone();
        let what = if rng.chance(25) {
            set_dimensions(&mut rng, &mut data);
            "dimensions"
        } else {
            mutate(&mut rng, &mut data)
        };
        if data.starts_with(b"\x89PNG") && rng.chance(60) {
            fix_png_crcs(&mut data);
        }
        run_case(
            &mut out,
            &format!("{name} #{case} ({what})"),
            &data,
            &bound,
            &read,
        );
    }
    report("images", &out, start);
}

// ---- MNIST IDX --------------------------------------------------------------------------

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn idx_seed() -> Vec<u8> {
    let (count, rows, cols) = (4u32, 28u32, 28u32);
    let mut v = vec![0, 0, 8, 3];
    for x in [count, rows, cols] {
        v.extend(x.to_be_bytes());
    }
    v.extend((0..count * rows * cols).map(|i| ((i * 7) % 251) as u8));
    v
}

#[test]
fn fuzz_idx() {
    let start = Instant::now();
    let plain = idx_seed();
    let gz = gzip(&plain);
    let mut rng = Rng(3);
    let mut out = new_outcome();
    // Plain: the digit as f32. Gzip: what deflate can expand to (at most 1032:1), doubled by
    // vector growth, plus the inflater's state.
    let plain_bound = |len: usize| 4 * len + (64 << 10);
    let gz_bound = |len: usize| 2 * 1032 * len + (256 << 10);
    let read = |b: &[u8]| idx::digit_from_bytes(b, 1, Path::new("fuzz-idx3-ubyte"));
    assert!(read(&plain).is_ok() && read(&gz).is_ok());
    for case in 0..cases(4000) {
        let mut data = plain.clone();
        let what = if rng.chance(30) {
            // count, rows, cols
            let at = 4 + 4 * rng.below(3);
            let v = INTERESTING[rng.below(INTERESTING.len())] as u32;
            data[at..at + 4].copy_from_slice(&v.to_be_bytes());
            "header field"
        } else {
            mutate(&mut rng, &mut data)
        };
        match case % 3 {
            0 => run_case(
                &mut out,
                &format!("idx #{case} ({what})"),
                &data,
                &plain_bound,
                &read,
            ),
            1 => {
                let z = gzip(&data);
                run_case(
                    &mut out,
                    &format!("idx.gz #{case} ({what})"),
                    &z,
                    &gz_bound,
                    &read,
                );
            }
            _ => {
                // The compressed stream itself, including the size trailer.
                let mut z = gz.clone();
                let what = if rng.chance(30) {
                    let n = z.len();
                    let v = INTERESTING[rng.below(INTERESTING.len())] as u32;
                    z[n - 4..].copy_from_slice(&v.to_le_bytes());
                    "gzip size trailer"
                } else {
                    mutate(&mut rng, &mut z)
                };
                run_case(
                    &mut out,
                    &format!("gz #{case} ({what})"),
                    &z,
                    &gz_bound,
                    &read,
                );
            }
        }
    }
    report("MNIST IDX", &out, start);
}

/// A few bytes of header must not make any reader allocate what they claim.
#[test]
fn huge_claims_are_refused_before_allocating() {
    // The allocator does see allocations.
    PEAK.with(|p| p.set(0));
    drop(std::hint::black_box(vec![0u8; 3 << 20]));
    assert!(PEAK.with(|p| p.get()) >= 3 << 20);

    // A PNG whose IHDR claims 100000×100000 RGBA, decoded with the default limits.
    let mut png = image_seeds()[1].1.clone();
    png[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    png[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    fix_png_crcs(&mut png);
    PEAK.with(|p| p.set(0));
    let e = load_from_bytes(&png, &DecodeLimits::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("100000×100000") && e.contains("resize"), "{e}");
    assert!(PEAK.with(|p| p.get()) < 1 << 20);

    // An IDX header claiming 2³²−1 images of 65535×65535, with a gzip bomb behind it.
    let mut idx = vec![0, 0, 8, 3];
    for x in [u32::MAX, 65535, 65535] {
        idx.extend(x.to_be_bytes());
    }
    idx.extend(vec![0u8; 20 << 20]);
    let z = gzip(&idx);
    PEAK.with(|p| p.set(0));
    assert!(idx::digit_from_bytes(&z, 0, Path::new("x-idx3-ubyte.gz")).is_err());
    let peak = PEAK.with(|p| p.get());
    assert!(peak <= 2 * (20 << 20) + (1 << 20), "{peak}");
    // One 28×28 digit promised, 20 MiB of zeros behind it: reading stops one byte past the
    // promise.
    idx[4..16].copy_from_slice(&[0, 0, 0, 1, 0, 0, 0, 28, 0, 0, 0, 28]);
    let z = gzip(&idx);
    PEAK.with(|p| p.set(0));
    let e = idx::digit_from_bytes(&z, 0, Path::new("x-idx3-ubyte.gz")).unwrap_err();
    assert!(e.to_string().contains("is longer"), "{e}");
    assert!(PEAK.with(|p| p.get()) < 1 << 20);

    // A TIFF tag claiming 2³²−1 values (the decoder reserved up to 256 MiB for such counts
    // before `check_tiff_tags`).
    let mut tiff = image_seeds()[8].1.clone();
    let ifd = u32::from_le_bytes(tiff[4..8].try_into().unwrap()) as usize;
    tiff[ifd + 6..ifd + 10].copy_from_slice(&u32::MAX.to_le_bytes());
    PEAK.with(|p| p.set(0));
    let e = load_from_bytes(&tiff, &DecodeLimits::default()).unwrap_err();
    assert!(e.to_string().contains("corrupt TIFF"), "{e}");
    assert!(PEAK.with(|p| p.get()) < 1 << 20);

    // A safetensors header length of 2⁶⁴−1.
    let mut st = model_seeds()[0].clone();
    st[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    PEAK.with(|p| p.set(0));
    assert!(spinr::model::from_bytes(&st).is_err());
    assert!(PEAK.with(|p| p.get()) < 1 << 20);
}
