//! The dense network on the CPU: f32 GEMMs (`matrixmultiply::sgemm`) over blocks of samples,
//! parallel over a fixed partition of each product's *output* (rows of samples for `H` and the
//! outputs, columns of features for `∇U`), so every sum runs in the same order whatever the
//! thread count: results are deterministic and independent of the machine's cores.
//!
//! Per block of `b` samples (`X_b`: `b×d`, given or generated):
//! `H = relu(X_b Uᵀ)` (`b×m`), `O = H V` (`b×C`), `R = dL/dO` with the per-sample losses,
//! `∇V += Hᵀ R`, `G = (R Vᵀ) ∘ 1[H > 0]` (in place of `H`), `∇U += Gᵀ X_b`.
//! Memory: `W`, `∇W`, two Adam moments (`4·(m·d + m·C)` floats), the mask, the block scratch
//! `b·(m + C + 1)` floats (`+ b·d` when rows are gathered or generated), and the features
//! `n·d` when grid features are materialised (within the caller's byte budget).

use super::adam::{self, AdamStep};
use super::mlp::{check_batch, head_sample, DenseMlp, MlpData, MlpShape, Targets};
use crate::backend::{BackendInfo, MemoryMeter, MemoryStats};
use crate::error::{Error, Param, Result};
use crate::problem::{Features, GridFourier};
use rayon::prelude::*;

/// Samples per parallel task of the row-wise products.
const ROW_TASK: usize = 64;
/// Features per parallel task of `∇U`.
const COL_TASK: usize = 128;
/// Bytes of per-block scratch (`H`, `R`, gathered features) a block aims for.
const SCRATCH_BYTES: usize = 64 << 20;

/// Read access to the features: a matrix (given or materialised) or generated per row.
#[derive(Clone, Copy)]
enum Feat<'b> {
    Dense(&'b [f32]),
    Grid(&'b GridFourier),
}

/// The samples of one pass: all of them in order, or a batch.
#[derive(Clone, Copy)]
enum Rows<'b> {
    All(usize),
    Batch(&'b [u32]),
}

impl Rows<'_> {
    fn len(&self) -> usize {
        match *self {
            Rows::All(n) => n,
            Rows::Batch(b) => b.len(),
        }
    }
    #[inline]
    fn sample(&self, a: usize) -> usize {
        match *self {
            Rows::All(_) => a,
            Rows::Batch(b) => b[a] as usize,
        }
    }
}

/// What a pass computes after the forward products.
enum Mode<'o> {
    /// Loss, `dL/dO` and the gradients.
    Train,
    /// The loss only.
    Loss,
    /// The outputs, appended here.
    Predict(&'o mut Vec<f32>),
}

fn feat_of<'b>(cache: &'b Option<Vec<f32>>, features: &'b Features) -> Feat<'b> {
    match (cache, features) {
        (Some(x), _) => Feat::Dense(x),
        (None, Features::Dense(x)) => Feat::Dense(x),
        (None, Features::Grid(g)) => Feat::Grid(g),
    }
}

/// A raw pointer shared by tasks that write disjoint parts of one matrix.
struct SharedOut(*mut f32);
// SAFETY: only used for writes to disjoint column ranges (see `grad_u`).
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}
impl SharedOut {
    fn get(&self) -> *mut f32 {
        self.0
    }
}

pub struct CpuMlp<'a> {
    data: MlpData<'a>,
    /// Grid features materialised (within the byte budget).
    cache: Option<Vec<f32>>,
    shape: MlpShape,
    w: Vec<f32>,
    g: Vec<f32>,
    m1: Vec<f32>,
    m2: Vec<f32>,
    mask: Vec<bool>,
    /// Samples per block.
    block: usize,
    xbuf: Vec<f32>,
    h: Vec<f32>,
    r: Vec<f32>,
    losses: Vec<f32>,
    last_loss: Option<f64>,
    meter: MemoryMeter,
}

impl<'a> CpuMlp<'a> {
    /// A network of `m` neurons and `c` outputs on `data`; grid features are materialised when
    /// they take at most `feature_budget` bytes. Weights start at zero, every weight alive.
    pub fn new(data: MlpData<'a>, m: usize, c: usize, feature_budget: usize) -> Result<Self> {
        data.check(m, c)?;
        let shape = MlpShape {
            n: data.n,
            d: data.d,
            m,
            c,
        };
        let nw = shape.weights();
        let mut meter = MemoryMeter::default();
        let cache = match data.features {
            Features::Grid(g) if (data.n as u64) * (data.d as u64) * 4 <= feature_budget as u64 => {
                let mut x = vec![0f32; data.n * data.d];
                x.par_chunks_mut(data.d)
                    .enumerate()
                    .for_each(|(i, row)| g.fill_row(i, row));
                meter.alloc(x.len() as u64 * 4);
                Some(x)
            }
            _ => None,
        };
        let block = (SCRATCH_BYTES / (4 * (data.d + m + c + 1)))
            .max(ROW_TASK)
            .min(data.n);
        meter.alloc(16 * nw as u64 + nw as u64);
        meter.alloc(4 * (block * (m + c + 1)) as u64);
        Ok(CpuMlp {
            data,
            cache,
            shape,
            w: vec![0.0; nw],
            g: vec![0.0; nw],
            m1: vec![0.0; nw],
            m2: vec![0.0; nw],
            mask: vec![true; nw],
            block,
            xbuf: Vec::new(),
            h: vec![0.0; block * m],
            r: vec![0.0; block * c],
            losses: vec![0.0; block],
            last_loss: None,
            meter,
        })
    }

    /// Test aid: smaller blocks (at most the allocated one), to run the multi-block path.
    pub fn set_block(&mut self, rows: usize) {
        self.block = rows.clamp(1, self.block);
    }

    /// Runs every block of `rows`: forward, then per `mode` the loss and gradients, the loss
    /// only, or the outputs. Returns the summed per-sample loss (0 when predicting).
    fn pass(&mut self, rows: Rows<'_>, mode: Mode<'_>) -> Result<f64> {
        let MlpShape { d, m, c, .. } = self.shape;
        let len = rows.len();
        let inv_norm = self.data.targets.inv_norm(len, c);
        let ud = m * d;
        let mut total = 0f64;
        let feat = feat_of(&self.cache, self.data.features);
        // Rows are gathered (or generated) into a buffer unless they are a slice of a matrix.
        let contiguous = matches!((feat, rows), (Feat::Dense(_), Rows::All(_)));
        if !contiguous && self.xbuf.len() < self.block * d {
            self.meter
                .alloc(4 * (self.block * d - self.xbuf.len()) as u64);
            self.xbuf.resize(self.block * d, 0.0);
        }
        let targets = match mode {
            Mode::Predict(_) => &Targets::None,
            _ => self.data.targets,
        };
        let loss_only = matches!(mode, Mode::Loss);
        let mut out = match mode {
            Mode::Predict(out) => Some(out),
            _ => None,
        };
        for a0 in (0..len).step_by(self.block) {
            let b = self.block.min(len - a0);
            let x: &[f32] = match (feat, contiguous) {
                (Feat::Dense(x), true) => &x[a0 * d..(a0 + b) * d],
                _ => {
                    let buf = &mut self.xbuf[..b * d];
                    buf.par_chunks_mut(d).enumerate().for_each(|(t, row)| {
                        let i = rows.sample(a0 + t);
                        match feat {
                            Feat::Dense(x) => row.copy_from_slice(&x[i * d..(i + 1) * d]),
                            Feat::Grid(g) => g.fill_row(i, row),
                        }
                    });
                    buf
                }
            };
            let (u, v) = self.w.split_at(ud);
            let h = &mut self.h[..b * m];
            let r = &mut self.r[..b * c];
            let losses = &mut self.losses[..b];
            hidden(x, u, h, d, m);
            head(
                h,
                v,
                r,
                losses,
                m,
                c,
                |t| rows.sample(a0 + t),
                targets,
                inv_norm,
            );
            if let Some(out) = out.as_deref_mut() {
                out.extend_from_slice(r);
                continue;
            }
            total += losses.iter().map(|&l| l as f64).sum::<f64>();
            if loss_only {
                continue;
            }
            let (gu, gv) = self.g.split_at_mut(ud);
            let beta = if a0 == 0 { 0.0 } else { 1.0 };
            // ∇V (+)= Hᵀ R: m·b·C multiply-adds, one task.
            // SAFETY: the dimensions and strides describe `h` (b×m), `r` (b×C), `gv` (m×C).
            unsafe {
                matrixmultiply::sgemm(
                    m,
                    b,
                    c,
                    1.0,
                    h.as_ptr(),
                    1,
                    m as isize,
                    r.as_ptr(),
                    c as isize,
                    1,
                    beta,
                    gv.as_mut_ptr(),
                    c as isize,
                    1,
                );
            }
            hidden_grad(h, r, v, m, c);
            grad_u(h, x, gu, b, d, m, beta);
        }
        Ok(total)
    }

    fn rows<'b>(&self, batch: Option<&'b [u32]>) -> Result<Rows<'b>> {
        check_batch(batch, self.shape.n)?;
        Ok(batch.map_or(Rows::All(self.shape.n), Rows::Batch))
    }

    fn need_targets(&self) -> Result<()> {
        if matches!(self.data.targets, Targets::None) {
            return Err(Error::invalid(
                Param::Outputs,
                "this network was built for prediction only (no targets)",
            ));
        }
        Ok(())
    }
}

/// `H = relu(X Uᵀ)`, parallel over blocks of `ROW_TASK` samples.
fn hidden(x: &[f32], u: &[f32], h: &mut [f32], d: usize, m: usize) {
    h.par_chunks_mut(ROW_TASK * m)
        .enumerate()
        .for_each(|(t, hc)| {
            let rb = hc.len() / m;
            let xc = &x[t * ROW_TASK * d..];
            // SAFETY: `xc` holds rb×d (row stride d), `u` m×d read as its transpose (d×m with
            // row stride 1, column stride d), `hc` rb×m.
            unsafe {
                matrixmultiply::sgemm(
                    rb,
                    d,
                    m,
                    1.0,
                    xc.as_ptr(),
                    d as isize,
                    1,
                    u.as_ptr(),
                    1,
                    d as isize,
                    0.0,
                    hc.as_mut_ptr(),
                    m as isize,
                    1,
                );
            }
            hc.iter_mut().for_each(|z| *z = z.max(0.0));
        });
}

/// Outputs `O = H V` into `r`, then (with targets) each sample's loss and `dL/dO` in place.
#[allow(clippy::too_many_arguments)]
fn head(
    h: &[f32],
    v: &[f32],
    r: &mut [f32],
    losses: &mut [f32],
    m: usize,
    c: usize,
    sample: impl Fn(usize) -> usize + Sync,
    targets: &Targets,
    inv_norm: f32,
) {
    r.par_chunks_mut(ROW_TASK * c)
        .zip(losses.par_chunks_mut(ROW_TASK))
        .enumerate()
        .for_each(|(t, (rc, lc))| {
            for (q, (o, loss)) in rc.chunks_mut(c).zip(lc.iter_mut()).enumerate() {
                let a = t * ROW_TASK + q;
                let hr = &h[a * m..(a + 1) * m];
                for (cc, oc) in o.iter_mut().enumerate() {
                    let mut s = 0f32;
                    for (j, &hj) in hr.iter().enumerate() {
                        s = hj.mul_add(v[j * c + cc], s);
                    }
                    *oc = s;
                }
                *loss = head_sample(o, targets, sample(a), inv_norm);
            }
        });
}

/// `G = (R Vᵀ) ∘ 1[H > 0]`, in place of `H`.
fn hidden_grad(h: &mut [f32], r: &[f32], v: &[f32], m: usize, c: usize) {
    h.par_chunks_mut(ROW_TASK * m)
        .zip(r.par_chunks(ROW_TASK * c))
        .for_each(|(hc, rc)| {
            for (hr, rr) in hc.chunks_mut(m).zip(rc.chunks(c)) {
                for (j, hj) in hr.iter_mut().enumerate() {
                    *hj = if *hj > 0.0 {
                        let mut s = 0f32;
                        for (cc, &rv) in rr.iter().enumerate() {
                            s = rv.mul_add(v[j * c + cc], s);
                        }
                        s
                    } else {
                        0.0
                    };
                }
            }
        });
}

/// `∇U (+)= Gᵀ X`, parallel over blocks of `COL_TASK` features (disjoint columns of `∇U`).
fn grad_u(gh: &[f32], x: &[f32], gu: &mut [f32], b: usize, d: usize, m: usize, beta: f32) {
    let out = SharedOut(gu.as_mut_ptr());
    (0..d.div_ceil(COL_TASK)).into_par_iter().for_each(|t| {
        let k0 = t * COL_TASK;
        let kw = COL_TASK.min(d - k0);
        // SAFETY: Gᵀ is read from `gh` (b×m) with row stride 1 and column stride m; X's columns
        // k0..k0+kw from `x` (b×d); the task writes only columns k0..k0+kw of `gu` (m×d), which
        // no other task touches, and `gu` outlives the parallel loop.
        unsafe {
            matrixmultiply::sgemm(
                m,
                b,
                kw,
                1.0,
                gh.as_ptr(),
                1,
                m as isize,
                x.as_ptr().add(k0),
                d as isize,
                1,
                beta,
                out.get().add(k0),
                d as isize,
                1,
            );
        }
    });
}

impl DenseMlp for CpuMlp<'_> {
    fn shape(&self) -> MlpShape {
        self.shape
    }

    fn info(&self) -> BackendInfo {
        BackendInfo {
            kind: "cpu",
            adapter: format!("CPU ({} threads)", rayon::current_num_threads()),
        }
    }

    fn set_weights(&mut self, u: &[f32], v: &[f32]) -> Result<()> {
        let ud = self.shape.u_len();
        if u.len() != ud || v.len() != self.shape.v_len() {
            return Err(Error::invalid(Param::Model, "U must be m×d and V m×C"));
        }
        crate::error::check_finite("weights", u)?;
        crate::error::check_finite("weights", v)?;
        self.w[..ud].copy_from_slice(u);
        self.w[ud..].copy_from_slice(v);
        Ok(())
    }

    fn set_mask(&mut self, u: &[bool], v: &[bool]) -> Result<()> {
        let ud = self.shape.u_len();
        if u.len() != ud || v.len() != self.shape.v_len() {
            return Err(Error::invalid(Param::Model, "masks must be m×d and m×C"));
        }
        self.mask[..ud].copy_from_slice(u);
        self.mask[ud..].copy_from_slice(v);
        Ok(())
    }

    fn weights(&mut self) -> Result<(Vec<f32>, Vec<f32>)> {
        let (u, v) = self.w.split_at(self.shape.u_len());
        Ok((u.to_vec(), v.to_vec()))
    }

    fn gradients(&mut self) -> Result<(Vec<f32>, Vec<f32>)> {
        let (u, v) = self.g.split_at(self.shape.u_len());
        Ok((u.to_vec(), v.to_vec()))
    }

    fn forward_backward(&mut self, batch: Option<&[u32]>) -> Result<()> {
        self.need_targets()?;
        let rows = self.rows(batch)?;
        self.last_loss = Some(self.pass(rows, Mode::Train)?);
        Ok(())
    }

    fn last_loss(&mut self) -> Result<f64> {
        self.last_loss
            .ok_or_else(|| Error::invalid(Param::Model, "no forward pass has run yet"))
    }

    fn loss(&mut self, batch: Option<&[u32]>) -> Result<f64> {
        self.need_targets()?;
        let rows = self.rows(batch)?;
        self.pass(rows, Mode::Loss)
    }

    fn reset_adam(&mut self) -> Result<()> {
        self.m1.fill(0.0);
        self.m2.fill(0.0);
        Ok(())
    }

    fn adam_step(&mut self, step: &AdamStep) -> Result<()> {
        adam::update(
            &mut self.w,
            &self.g,
            &mut self.m1,
            &mut self.m2,
            &self.mask,
            step,
        );
        Ok(())
    }

    fn predict(&mut self, batch: Option<&[u32]>) -> Result<Vec<f32>> {
        let rows = self.rows(batch)?;
        let mut out = Vec::with_capacity(rows.len() * self.shape.c);
        self.pass(rows, Mode::Predict(&mut out))?;
        Ok(out)
    }

    fn memory(&self) -> MemoryStats {
        self.meter.stats()
    }
}
