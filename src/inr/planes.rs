//! Colour images fitted as three gray planes (ARCHITECTURE.md, "Images").
//!
//! The paper fits a colour image as one network with the channel as a third grid axis
//! ([`Colour::ChannelAxis`]). There a neuron's colour varies, to first order, only along
//! R − B, so the green–magenta direction is fitted badly and shows as chroma speckle.
//! [`Colour::LumaChroma`] (spinr's default) fits the planes of the orthonormal transform
//! `y = (R+G+B)/√3`, `a = (R−B)/√2`, `b = (R−2G+B)/√6` as three independent gray sparse
//! networks, each with its own share of the `s` nonzeros, its own σ and its own fit:
//! - each plane is offset and scaled into [0, 1] (a sum of ReLUs is never negative):
//!   `Y' = y/√3`, `A' = a/√2 + ½`, `B' = b·√6/4 + ½`; the transform being orthonormal, the
//!   RGB error is the sum of the planes' errors in the orthonormal scale;
//! - the nonzeros are split as the `s`-term DCT of the three orthonormal planes splits them
//!   ([`split_nonzeros`]), σ is read off each plane as for a gray image, luma takes the fit's
//!   `m` neurons and a chroma plane `⌈m·s_p/s⌉` (at least [`MIN_CHROMA_NEURONS`]);
//! - a plane has a third of the channel axis's samples, so an epoch costs about a third:
//!   [`PLANE_ITERS`] epochs take about the channel axis's 30 epochs' time.

use super::fit::{FitOptions, FitPlan, FitReport, Method, PlaneReport};
use super::spectrum::Frequencies;
use super::{Image, ImageModel};
use crate::backend::{BackendChoice, BackendInfo};
use crate::error::{Error, Param, Result};
use crate::iht::{Gating, Variant};
use crate::sparse::SparseVec;

pub use super::colour::{Colour, PLANES};

/// Epochs of a plane fit when none are asked for: about the time of the channel axis's 30
/// (README, "Colour").
pub const PLANE_ITERS: usize = 50;
/// The fewest neurons a chroma plane gets.
pub const MIN_CHROMA_NEURONS: usize = 4;

/// How a fit of an image with `channels` channels treats colour: `None` for gray. Unless
/// asked, spinr's IHT fits luma and chroma, IMP and the paper's variant the channel axis.
pub fn resolve(
    asked: Option<Colour>,
    channels: usize,
    method: Method,
    variant: Variant,
) -> Result<Option<Colour>> {
    if channels == 1 {
        return Ok(None);
    }
    match asked {
        Some(Colour::LumaChroma) if method == Method::Imp => Err(Error::invalid(
            Param::Colour,
            "IMP fits the paper's channel axis; drop --colour luma-chroma (or fit with \
             --method iht)",
        )),
        Some(c) => Ok(Some(c)),
        None if method == Method::Iht && variant == Variant::Spinr => Ok(Some(Colour::LumaChroma)),
        None => Ok(Some(Colour::ChannelAxis)),
    }
}

/// Plane `p` of the pixel `(r, g, b)`, in [0, 1].
fn plane_value(p: usize, r: f64, g: f64, b: f64) -> f64 {
    match p {
        0 => (r + g + b) / 3.0,
        1 => (r - b) / 2.0 + 0.5,
        _ => (r - 2.0 * g + b) / 4.0 + 0.5,
    }
}

/// One unit of plane `p` in the orthonormal basis: `y = √3·Y'`, `a = √2·(A' − ½)`,
/// `b = √(8/3)·(B' − ½)`.
fn plane_scale(p: usize) -> f64 {
    [3f64.sqrt(), std::f64::consts::SQRT_2, (8.0f64 / 3.0).sqrt()][p]
}

/// The three planes of an RGB image, each a gray image in [0, 1].
pub fn split(img: &Image) -> [Image; 3] {
    debug_assert_eq!(img.channels, 3);
    std::array::from_fn(|p| Image {
        height: img.height,
        width: img.width,
        channels: 1,
        data: img
            .data
            .chunks_exact(3)
            .map(|c| plane_value(p, c[0] as f64, c[1] as f64, c[2] as f64) as f32)
            .collect(),
    })
}

/// The RGB image of three planes (the inverse of [`split`]), clamped to [0, 1].
pub fn join(planes: [&Image; 3]) -> Image {
    let n = planes[0].data.len();
    let mut data = Vec::with_capacity(3 * n);
    for i in 0..n {
        let sum = 3.0 * planes[0].data[i] as f64; // R + G + B
        let rb = 2.0 * (planes[1].data[i] as f64 - 0.5); // R − B
        let gm = 4.0 * (planes[2].data[i] as f64 - 0.5); // R − 2G + B
        let g = (sum - gm) / 3.0;
        let r_plus_b = sum - g;
        let (r, b) = ((r_plus_b + rb) / 2.0, (r_plus_b - rb) / 2.0);
        data.extend([r, g, b].map(|v| v.clamp(0.0, 1.0) as f32));
    }
    Image {
        height: planes[0].height,
        width: planes[0].width,
        channels: 3,
        data,
    }
}

/// Splits `s` nonzeros between the planes as the `s`-term DCT approximation of the three
/// orthonormal planes (offsets included, so each chroma plane's constant is among them)
/// splits its terms; every plane gets at least one.
pub fn split_nonzeros(planes: &[Image; 3], s: usize) -> Result<[usize; 3]> {
    if s < 3 {
        return Err(Error::invalid(
            Param::Nonzeros,
            format!(
                "s = {s}: a colour fit in luma and chroma planes needs at least one nonzero per \
                 plane (s ≥ 3), or --colour channel-axis"
            ),
        ));
    }
    let mut coeffs = Vec::new();
    let mut owner = Vec::new();
    for (p, img) in planes.iter().enumerate() {
        let k = plane_scale(p);
        for c in super::dct::forward(img)? {
            coeffs.push(c * k);
            owner.push(p);
        }
    }
    let mut counts = [0usize; 3];
    for i in super::dct::largest(&coeffs, s) {
        counts[owner[i]] += 1;
    }
    for p in 0..3 {
        if counts[p] == 0 {
            let most = (0..3)
                .max_by_key(|&q| (counts[q], 3 - q))
                .expect("three planes");
            counts[most] -= 1;
            counts[p] = 1;
        }
    }
    Ok(counts)
}

/// The yardstick in the planes a colour fit uses: the `s`-term DCT of the three planes, its
/// terms split between them as [`split_nonzeros`] splits a fit's nonzeros. Gives each plane's
/// PSNR (its values in [0, 1], as a plane fit's) and the PSNR of the joined RGB image, which
/// the report's `dct_psnr` (the DCT of the R, G and B channels) is compared with.
pub fn planes_dct(image: &Image, s: usize) -> Result<([f64; 3], f64)> {
    let counts = split_nonzeros(&split(image), s)?;
    planes_dct_of(image, counts)
}

/// [`planes_dct`] with `counts[p]` terms for plane `p` (each at least 1).
pub fn planes_dct_of(image: &Image, counts: [usize; 3]) -> Result<([f64; 3], f64)> {
    let planes = split(image);
    let mut approx = Vec::with_capacity(3);
    let mut psnr = [0.0; 3];
    for p in 0..3 {
        let a = super::dct::dct_approximation(&planes[p], counts[p])?;
        psnr[p] = super::fit::psnr(crate::metrics::mse(&a.data, &planes[p].data));
        approx.push(a);
    }
    let joined = join([&approx[0], &approx[1], &approx[2]]);
    Ok((
        psnr,
        super::fit::psnr(crate::metrics::mse(&joined.data, &image.data)),
    ))
}

/// Neurons of plane `p` with `s_p` of the fit's `s` nonzeros: luma takes the fit's `m`, a
/// chroma plane its share of them (at least [`MIN_CHROMA_NEURONS`]), never more than `m`.
pub fn plane_neurons(m: usize, s_p: usize, s: usize, p: usize) -> usize {
    if p == 0 {
        m
    } else {
        (m * s_p).div_ceil(s).max(MIN_CHROMA_NEURONS).min(m)
    }
}

/// A colour fit's three plane fits, planned.
#[derive(Clone, Debug)]
pub struct PlanesPlan {
    pub images: [Image; 3],
    pub plans: [FitPlan; 3],
}

impl PlanesPlan {
    /// Plans the plane fits of a colour `image` with `options` (σ read off each plane unless
    /// given; `options.iters` epochs each).
    pub fn new(options: &FitOptions, image: &Image) -> Result<Self> {
        let images = split(image);
        let s = options.nonzeros;
        // The total's range first, so that its error names s as the user gave it.
        options.check_sizes()?;
        let counts = split_nonzeros(&images, s)?;
        let mut plans = Vec::with_capacity(3);
        for (p, img) in images.iter().enumerate() {
            let o = FitOptions {
                nonzeros: counts[p],
                neurons: plane_neurons(options.neurons, counts[p], s, p),
                colour: None,
                // Chroma keeps the Gaussian draw unless asked: its smooth planes lost with
                // the spectrum (README, "Frequencies from the spectrum").
                frequencies: options
                    .frequencies
                    .or((p > 0).then_some(Frequencies::Gaussian)),
                ..options.clone()
            };
            plans.push(o.plan_as_part(img, s)?);
        }
        Ok(PlanesPlan {
            images,
            plans: plans.try_into().expect("three plans"),
        })
    }

    /// The plan of plane `p` after the planes before it took `spent` seconds: under a time
    /// budget, with its share of what they left by [`plane_cost`] of the planes from `p` on
    /// (so the last plane gets all that is left); otherwise as planned.
    pub fn plane_plan(&self, p: usize, spent: f64) -> std::borrow::Cow<'_, FitPlan> {
        let plan = &self.plans[p];
        let Some(budget) = plan.cfg.time_budget else {
            return std::borrow::Cow::Borrowed(plan);
        };
        let cost = |q: usize| plane_cost(&self.plans[q]);
        let rest: f64 = (p..3).map(cost).sum();
        let mut own = plan.clone();
        own.cfg.time_budget = Some(((budget - spent) * cost(p) / rest).max(f64::MIN_POSITIVE));
        std::borrow::Cow::Owned(own)
    }
}

/// A plane fit's time per epoch in relative units: about ten support passes per sample over
/// its `s_p` nonzeros, its dense pass over `m_p·d` weights, and per-sample work over the `d`
/// features that every plane pays whatever its size (laying out the epoch, each update's
/// fixed work). The last term's weight, `22·d`, is fitted to the default fit of chelsea at
/// 256², s = 3000, whose planes took 8.6, 2.4 and 1.6 s (`benches/NOTES.md`, CPU item 17):
/// this model gives them 67%, 19% and 15% of the time, as measured (68%, 19%, 13%).
pub fn plane_cost(plan: &FitPlan) -> f64 {
    let (s, m, d) = (
        plan.cfg.s as f64,
        plan.spec.neurons as f64,
        plan.spec.features as f64,
    );
    10.0 * s + m * d + 22.0 * d
}

/// A model of the three planes: what `spinr render` evaluates and joins.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanesModel {
    pub planes: [ImageModel; 3],
}

impl PlanesModel {
    pub fn height(&self) -> usize {
        self.planes[0].height
    }

    pub fn width(&self) -> usize {
        self.planes[0].width
    }

    pub fn nonzeros(&self) -> usize {
        self.planes.iter().map(|m| m.w.len()).sum()
    }

    /// Renders each plane at `height × width` and joins them.
    pub fn render(
        &self,
        choice: BackendChoice,
        adapter: Option<&str>,
        height: usize,
        width: usize,
    ) -> Result<Image> {
        let mut planes = Vec::with_capacity(3);
        for m in &self.planes {
            planes.push(m.render(choice, adapter, height, width)?);
        }
        Ok(join([&planes[0], &planes[1], &planes[2]]))
    }

    /// Host memory of a render: one plane's at a time, and the three planes' images.
    pub fn render_memory(&self, height: usize, width: usize) -> crate::budget::Estimate {
        let mut e = self.planes[0].render_memory(height, width);
        e.add("rendered planes", 3 * 4 * height as u64 * width as u64);
        e
    }
}

/// One plane of a colour fit, fitted (or a placeholder: [`PlaneFit::placeholder`]).
#[derive(Clone, Debug)]
pub struct PlaneFit {
    pub model: ImageModel,
    /// The model's prediction clamped to [0, 1].
    pub recon: Image,
    pub iterations: usize,
    /// PSNR of the plane (its values in [0, 1]).
    pub psnr: f64,
    pub seconds: f64,
}

impl PlaneFit {
    /// A fitted plane: the plane fit's model and reconstruction, scored against `plane`.
    pub fn new(
        model: ImageModel,
        recon: Image,
        plane: &Image,
        iterations: usize,
        seconds: f64,
    ) -> Self {
        PlaneFit {
            psnr: super::fit::psnr(crate::metrics::mse(&recon.data, &plane.data)),
            model,
            recon,
            iterations,
            seconds,
        }
    }

    /// A plane fit's result, scored against `plane`.
    pub fn of(fit: super::fit::ImageFit, plane: &Image) -> Self {
        Self::new(fit.model, fit.recon, plane, fit.iterations, fit.seconds)
    }

    /// A plane not fitted yet (the fit stopped before it): [`placeholder`].
    pub fn placeholder(plan: &FitPlan, plane: &Image) -> Self {
        let model = placeholder(plan, plane);
        let v = model.w.values.first().map_or(0.0, |v| v.clamp(0.0, 1.0));
        let recon = Image {
            data: vec![v; plane.data.len()],
            ..plane.clone()
        };
        Self::new(model, recon, plane, 0, 0.0)
    }
}

/// A colour fit in planes: the three plane fits and the joined reconstruction.
#[derive(Clone, Debug)]
pub struct PlanesFit {
    pub planes: Vec<PlaneFit>,
    /// The joined RGB prediction, at the fitted size.
    pub recon: Image,
    pub stopped: bool,
    /// Wall time of the three fits.
    pub seconds: f64,
    pub backend: crate::backend::BackendInfo,
    pub peak_device_bytes: u64,
}

impl PlanesFit {
    pub fn new(
        planes: Vec<PlaneFit>,
        stopped: bool,
        backend: crate::backend::BackendInfo,
        peak_device_bytes: u64,
    ) -> Self {
        assert_eq!(planes.len(), 3, "a colour fit has three planes");
        PlanesFit {
            recon: join([&planes[0].recon, &planes[1].recon, &planes[2].recon]),
            seconds: planes.iter().map(|p| p.seconds).sum(),
            planes,
            stopped,
            backend,
            peak_device_bytes,
        }
    }

    pub fn model(&self) -> PlanesModel {
        PlanesModel {
            planes: std::array::from_fn(|p| self.planes[p].model.clone()),
        }
    }
}

/// Fits the three planes one after the other with `fit_plane` (a plane's image, its plan;
/// it returns the fit, which may have stopped). Planes after a stopped one get placeholders.
pub fn fit_planes(
    plan: &PlanesPlan,
    mut fit_plane: impl FnMut(usize, &Image, &FitPlan) -> Result<super::fit::ImageFit>,
) -> Result<PlanesFit> {
    let mut planes = Vec::with_capacity(3);
    let (mut stopped, mut backend, mut peak) = (false, None, 0);
    let mut spent = 0.0;
    for p in 0..3 {
        let (image, pplan) = (&plan.images[p], plan.plane_plan(p, spent));
        if stopped {
            planes.push(PlaneFit::placeholder(&pplan, image));
            continue;
        }
        let f = fit_plane(p, image, &pplan)?;
        spent += f.seconds;
        stopped = f.stopped;
        peak = peak.max(f.peak_device_bytes);
        backend.get_or_insert(f.backend.clone());
        planes.push(PlaneFit::of(f, image));
    }
    Ok(PlanesFit::new(
        planes,
        stopped,
        backend.expect("the first plane was fitted"),
        peak,
    ))
}

/// The model of a plane not fitted yet (a fit stopped before it): the plane's mean through
/// the constant feature, or nothing without one.
pub fn placeholder(plan: &FitPlan, image: &Image) -> ImageModel {
    let spec = &plan.spec;
    let mean = image.data.iter().map(|&v| v as f64).sum::<f64>() / image.data.len().max(1) as f64;
    // The constant feature is cos 0 = 1, the first cosine (ARCHITECTURE.md, "Images").
    let w = if spec.constant_feature && mean > 0.0 {
        SparseVec {
            indices: vec![(spec.features / 2) as u32],
            values: vec![mean as f32],
        }
    } else {
        SparseVec::default()
    };
    ImageModel {
        spec: spec.clone(),
        height: plan.height,
        width: plan.width,
        channels: 1,
        gating: Gating::SelfGated,
        w,
        output: None,
        dct: Default::default(),
    }
}

impl FitOptions {
    /// How a fit of `image` treats colour (`None` for gray): [`resolve`]. A luma-chroma fit is
    /// planned with [`PlanesPlan`], one network per plane.
    pub fn colour_for(&self, image: &Image) -> Result<Option<Colour>> {
        resolve(self.colour, image.channels, self.method, self.variant)
    }
}

/// The report of a fit in planes: its sizes are the planes' sums, and each plane has a line.
impl FitReport {
    /// The report of a colour fit in planes about to start.
    pub fn start_planes(
        image_name: &str,
        plan: &PlanesPlan,
        backend: &BackendInfo,
        out_dir: &str,
    ) -> Self {
        let luma = &plan.plans[0];
        FitReport {
            channels: 3,
            neurons: plan.plans.iter().map(|p| p.spec.neurons).sum(),
            nonzeros: plan.plans.iter().map(|p| p.cfg.s + p.dct_terms).sum(),
            dct_terms: plan.plans.iter().map(|p| p.dct_terms).sum(),
            colour: Some(Colour::LumaChroma),
            ..Self::start(image_name, luma, backend, out_dir)
        }
    }

    /// Fills in the results of a colour fit in planes.
    pub fn finish_planes(
        &mut self,
        image: &Image,
        fit: &PlanesFit,
        model_bytes: Option<u64>,
    ) -> Result<()> {
        // As many terms per plane as its model has nonzeros (the planned split, unless a plane
        // kept a model from its growing support), as `dct_psnr` has the model's total.
        let counts = std::array::from_fn(|p| fit.planes[p].model.nonzeros().max(1));
        let (plane_dct, dct) = planes_dct_of(image, counts)?;
        self.dct_planes_psnr = Some(dct);
        let luma = &fit.planes[0].model;
        self.gating = Some(luma.gating);
        self.nonzeros = fit.planes.iter().map(|p| p.model.nonzeros()).sum();
        self.dct_terms = fit.planes.iter().map(|p| p.model.dct.len()).sum();
        self.iterations = fit.planes.iter().map(|p| p.iterations).sum();
        if self.time_budget.is_some() {
            self.iters = fit.planes[0].iterations;
        }
        self.peak_device_bytes = fit.peak_device_bytes;
        self.planes = Some(
            fit.planes
                .iter()
                .zip(PLANES)
                .zip(plane_dct)
                .map(|((p, name), dct_psnr)| PlaneReport {
                    plane: name.to_string(),
                    nonzeros: p.model.nonzeros(),
                    dct_terms: p.model.dct.len(),
                    neurons: p.model.spec.neurons,
                    sigma: p.model.spec.sigma.clone(),
                    iterations: p.iterations,
                    psnr: p.psnr,
                    dct_psnr: Some(dct_psnr),
                    seconds: p.seconds,
                    frequencies: Frequencies::of(&p.model.spec),
                })
                .collect(),
        );
        self.quality(image, &fit.recon, fit.stopped, fit.seconds, model_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn photo(h: usize, w: usize, seed: u32) -> Image {
        let mut x = seed.wrapping_mul(2_654_435_761).max(1);
        let data = (0..h * w * 3)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x % 1000) as f32 / 999.0
            })
            .collect();
        Image {
            height: h,
            width: w,
            channels: 3,
            data,
        }
    }

    /// Under a time budget each plane gets its cost's share of what the planes before it
    /// left, so shares spent exactly add up to the budget and the last plane takes the rest.
    #[test]
    fn a_time_budget_is_shared_by_the_planes_cost() {
        let img = photo(40, 48, 9);
        let options = FitOptions {
            nonzeros: 300,
            time_budget: Some(9.0),
            ..FitOptions::default()
        };
        let pp = PlanesPlan::new(&options, &img).unwrap();
        let budget = |p: usize, spent: f64| pp.plane_plan(p, spent).cfg.time_budget.unwrap();
        let b0 = budget(0, 0.0);
        let b1 = budget(1, b0);
        let b2 = budget(2, b0 + b1);
        assert!((b0 + b1 + b2 - 9.0).abs() < 1e-9, "{b0} {b1} {b2}");
        let cost: Vec<f64> = pp.plans.iter().map(plane_cost).collect();
        let total: f64 = cost.iter().sum();
        for (b, c) in [b0, b1, b2].iter().zip(&cost) {
            assert!((b / 9.0 - c / total).abs() < 1e-12);
        }
        // Luma, with most of the nonzeros and neurons, gets the largest share.
        assert!(b0 > b1 && b0 > b2);
        // Planes that overran leave less; an overrun budget is still a positive one.
        assert!((budget(2, 8.0) - 1.0).abs() < 1e-12);
        assert!(budget(2, 10.0) > 0.0);
        let plain = PlanesPlan::new(
            &FitOptions {
                time_budget: None,
                ..options
            },
            &img,
        )
        .unwrap();
        assert!(matches!(
            plain.plane_plan(1, 3.0),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    /// The planes' DCT yardstick: a gray image in RGB has constant chroma planes, which take
    /// one term each, so it is the gray DCT with two terms fewer; and since the planes are
    /// orthonormal, the joined error is the planes' errors summed with their scales.
    #[test]
    fn the_planes_dct_is_the_gray_dct_on_gray_pixels_and_sums_the_planes_errors() {
        let (h, w) = (23, 31);
        let gray: Vec<f32> = (0..h * w)
            .map(|i| {
                let (r, c) = ((i / w) as f32, (i % w) as f32);
                0.5 + 0.2 * (r / 3.0).sin() * (c / 5.0).cos() + 0.1 * ((r + c) / 2.0).sin()
            })
            .collect();
        let g = Image {
            height: h,
            width: w,
            channels: 1,
            data: gray.clone(),
        };
        let rgb = Image {
            channels: 3,
            data: gray.iter().flat_map(|&v| [v, v, v]).collect(),
            ..g.clone()
        };
        let s = 60;
        let (plane, joined) = planes_dct(&rgb, s).unwrap();
        let want = crate::inr::dct::dct_psnr(&g, s - 2).unwrap();
        assert!((joined - want).abs() < 1e-6, "{joined} against {want}");
        assert!(
            (plane[0] - want).abs() < 1e-6,
            "{} against {want}",
            plane[0]
        );
        assert!(plane[1] > 100.0 && plane[2] > 100.0, "{plane:?}");
        // The channels' DCT spends three terms on what the planes' spends one on.
        assert!(joined > crate::inr::dct::dct_psnr(&rgb, s).unwrap() + 3.0);
        // A colour image within [0.2, 0.8]: no clamping, so the scales add up exactly.
        let col = Image {
            channels: 3,
            data: (0..h * w * 3)
                .map(|k| {
                    let (i, ch) = (k / 3, k % 3);
                    let (r, c) = ((i / w) as f32, (i % w) as f32);
                    0.5 + 0.15 * ((r + ch as f32) / 4.0).sin() * (c / (3.0 + ch as f32)).cos()
                })
                .collect(),
            ..g.clone()
        };
        let (plane, joined) = planes_dct(&col, 200).unwrap();
        let mse = |p: f64| 10f64.powf(-p / 10.0);
        let sum = (3.0 * mse(plane[0]) + 2.0 * mse(plane[1]) + 8.0 / 3.0 * mse(plane[2])) / 3.0;
        assert!(
            (mse(joined) / sum - 1.0).abs() < 1e-4,
            "{} against {sum}",
            mse(joined)
        );
    }

    #[test]
    fn planes_join_back_to_the_pixels() {
        let img = photo(7, 5, 3);
        let planes = split(&img);
        for p in &planes {
            assert!(p.data.iter().all(|&v| (0.0..=1.0).contains(&v)));
        }
        let back = join([&planes[0], &planes[1], &planes[2]]);
        for (a, b) in back.data.iter().zip(&img.data) {
            assert!((a - b).abs() < 2e-6, "{a} vs {b}");
        }
    }

    #[test]
    fn plane_errors_add_up_to_the_rgb_error() {
        // Orthonormal: an error e_p on plane p costs (e_p·scale_p)² summed over the pixel's
        // three channels.
        // Values inside [0.1, 0.9]: no pixel is clamped, so no error is lost.
        let mut img = photo(4, 6, 9);
        img.data.iter_mut().for_each(|v| *v = 0.1 + 0.8 * *v);
        let mut planes = split(&img);
        let e = [0.01f32, -0.02, 0.015];
        for (p, plane) in planes.iter_mut().enumerate() {
            plane.data.iter_mut().for_each(|v| *v += e[p]);
        }
        let back = join([&planes[0], &planes[1], &planes[2]]);
        let n = img.data.len() as f64;
        let rgb: f64 = back
            .data
            .iter()
            .zip(&img.data)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum::<f64>();
        let want: f64 = (0..3)
            .map(|p| (e[p] as f64 * plane_scale(p)).powi(2))
            .sum::<f64>()
            * (n / 3.0);
        assert!((rgb - want).abs() < 1e-4 * want, "{rgb} vs {want}");
    }

    #[test]
    fn nonzeros_split_follows_the_dct_and_keeps_one_per_plane() {
        let img = photo(9, 11, 1);
        let planes = split(&img);
        for s in [3, 4, 10, 100, 297] {
            let c = split_nonzeros(&planes, s).unwrap();
            assert_eq!(c.iter().sum::<usize>(), s, "{c:?}");
            assert!(c.iter().all(|&k| k >= 1), "{c:?}");
        }
        // A gray picture stored as RGB: its chroma planes are constant, one term each.
        let gray = Image {
            data: img.data.chunks(3).flat_map(|c| [c[0]; 3]).collect(),
            ..img.clone()
        };
        assert_eq!(split_nonzeros(&split(&gray), 50).unwrap(), [48, 1, 1]);
        assert!(split_nonzeros(&planes, 2).is_err());
    }

    #[test]
    fn chroma_planes_get_their_share_of_the_neurons() {
        assert_eq!(plane_neurons(50, 2500, 3000, 0), 50);
        assert_eq!(plane_neurons(50, 360, 3000, 1), 6);
        assert_eq!(plane_neurons(50, 64, 3000, 2), MIN_CHROMA_NEURONS);
        assert_eq!(plane_neurons(3, 1, 3000, 2), 3);
    }
}
