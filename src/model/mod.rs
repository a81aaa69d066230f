//! Model files: safetensors with two tensors, `indices` (`u32 [s]`) and `values` (`f32 [s]`), and
//! string metadata holding everything needed to regenerate the features and gates
//! (ARCHITECTURE.md, "Images": the whole model is the spec plus the `s` pairs).
//!
//! A model with an output layer (IMP's pruned network `Σ_j V_j relu(u_j·φ(x))`, where `V` may
//! be negative) has a third tensor `output` (`f32 [m]`, or `[m, C]`) holding `V`; its first layer
//! is stored in `indices`/`values` exactly as IHT's weights, and it gates by ReLU. Files
//! without `output` are IHT's plain sums of ReLUs, unchanged.
//!
//! A model whose frequencies were read off the image's spectrum has a tensor `frequencies`
//! (`f32 [r, axes]`): the last `r` rows of the feature frequencies, which replace the seed's
//! draw ([`crate::inr::InrSpec::image_frequencies`]). Files without it draw every frequency
//! from the seed.
//!
//! A model with DCT terms ([`crate::inr::terms`]) has two more tensors, `dct_indices` (`u32
//! [k]`, in the DCT's sample order of the fitted grid) and `dct_values` (`f32 [k]`). Files
//! without them are the network alone.
//!
//! Loading is strict: a truncated or corrupt file, a missing or unknown metadata key, an index
//! out of range or a non-finite value is an error that names the file and the problem.

use crate::error::{Error, Result};
use crate::iht::Gating;
use crate::inr::planes::PlanesModel;
use crate::inr::terms::DctTerms;
use crate::inr::{Coords, ImageModel, InrSpec};
use crate::problem::GateMode;
use crate::sparse::SparseVec;
use safetensors::tensor::{Dtype, TensorView};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

/// Identifies spinr image models.
pub const FORMAT: &str = "spinr-inr";
/// Bumped whenever the meaning of a file changes; readers refuse other versions.
pub const FORMAT_VERSION: u32 = 1;

const KEYS: [&str; 15] = [
    "format",
    "format_version",
    "spinr_version",
    "m",
    "d",
    "sigma",
    "coords",
    "feature_seed",
    "gate_seed",
    "gates",
    "gating",
    "height",
    "width",
    "channels",
    "constant_feature",
];

fn join(xs: &[f64]) -> String {
    // `{}` on f64 prints the shortest string that parses back to the same value.
    xs.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The little-endian bytes of tensor values (safetensors stores little-endian), e.g.
/// `le_bytes(&w.indices, u32::to_le_bytes)`; shared by every safetensors writer of spinr.
pub(crate) fn le_bytes<T: Copy, const N: usize>(xs: &[T], f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
    xs.iter().flat_map(|&x| f(x)).collect()
}

/// The values of little-endian 4-byte tensor data, e.g. `from_le(t.data(), u32::from_le_bytes)`.
pub(crate) fn from_le<T>(bytes: &[u8], f: impl Fn([u8; 4]) -> T) -> Vec<T> {
    bytes
        .chunks_exact(4)
        .map(|b| f(b.try_into().expect("4 bytes")))
        .collect()
}

/// Serialises a model to safetensors bytes.
pub fn to_bytes(model: &ImageModel) -> Result<Vec<u8>> {
    let spec = &model.spec;
    let meta: HashMap<String, String> = [
        ("format", FORMAT.to_string()),
        ("format_version", FORMAT_VERSION.to_string()),
        ("spinr_version", env!("CARGO_PKG_VERSION").to_string()),
        ("m", spec.neurons.to_string()),
        ("d", spec.features.to_string()),
        ("sigma", join(&spec.sigma)),
        ("coords", spec.coords.as_str().to_string()),
        ("feature_seed", spec.feature_seed.to_string()),
        ("gate_seed", spec.gate_seed.to_string()),
        ("gates", spec.gates.as_str().to_string()),
        (
            "gating",
            match model.gating {
                Gating::Random => "random",
                Gating::SelfGated => "relu",
            }
            .to_string(),
        ),
        ("height", model.height.to_string()),
        ("width", model.width.to_string()),
        ("channels", model.channels.to_string()),
        ("constant_feature", spec.constant_feature.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let s = model.w.len();
    let idx = le_bytes(&model.w.indices, u32::to_le_bytes);
    let val = le_bytes(&model.w.values, f32::to_le_bytes);
    let ser = |e: safetensors::SafeTensorError| Error::Io {
        path: "model".into(),
        msg: format!("cannot serialise the model: {e}"),
    };
    let mut tensors = vec![
        (
            "indices",
            TensorView::new(Dtype::U32, vec![s], &idx).map_err(ser)?,
        ),
        (
            "values",
            TensorView::new(Dtype::F32, vec![s], &val).map_err(ser)?,
        ),
    ];
    let freq: Vec<u8>;
    if !spec.image_frequencies.is_empty() {
        let axes = spec.sigma.len();
        freq = le_bytes(&spec.image_frequencies, f32::to_le_bytes);
        tensors.push((
            "frequencies",
            TensorView::new(
                Dtype::F32,
                vec![spec.image_frequencies.len() / axes, axes],
                &freq,
            )
            .map_err(ser)?,
        ));
    }
    let (dct_idx, dct_val): (Vec<u8>, Vec<u8>);
    if !model.dct.is_empty() {
        let k = model.dct.len();
        dct_idx = le_bytes(&model.dct.indices, u32::to_le_bytes);
        dct_val = le_bytes(&model.dct.values, f32::to_le_bytes);
        tensors.push((
            "dct_indices",
            TensorView::new(Dtype::U32, vec![k], &dct_idx).map_err(ser)?,
        ));
        tensors.push((
            "dct_values",
            TensorView::new(Dtype::F32, vec![k], &dct_val).map_err(ser)?,
        ));
    }
    let out: Vec<u8>;
    if let Some(v) = &model.output {
        let m = spec.neurons;
        if v.is_empty() || v.len() % m != 0 {
            return Err(Error::invalid(
                crate::error::Param::Model,
                format!(
                    "the output layer has {} weights, not a multiple of m = {m}",
                    v.len()
                ),
            ));
        }
        out = le_bytes(v, f32::to_le_bytes);
        let shape = if v.len() == m {
            vec![m]
        } else {
            vec![m, v.len() / m]
        };
        tensors.push((
            "output",
            TensorView::new(Dtype::F32, shape, &out).map_err(ser)?,
        ));
    }
    Ok(canonical(
        safetensors::serialize(tensors, Some(meta)).map_err(ser)?,
    ))
}

/// The `format` metadata of safetensors bytes (a model, a model of planes or a checkpoint),
/// if they have one.
pub fn format_of(bytes: &[u8]) -> Option<String> {
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes).ok()?;
    header.metadata().as_ref()?.get("format").cloned()
}

/// The same safetensors bytes with the header's keys in sorted order: `safetensors` writes
/// its metadata map in hash order, which differs from run to run, and a model (or checkpoint)
/// of the same fit should be the same file.
pub(crate) fn canonical(bytes: Vec<u8>) -> Vec<u8> {
    use std::collections::BTreeMap;
    let Some(len) = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
    else {
        return bytes;
    };
    let Some(Ok(header)) = bytes
        .get(8..8 + len)
        .map(serde_json::from_slice::<BTreeMap<String, serde_json::Value>>)
    else {
        return bytes;
    };
    let sorted: BTreeMap<String, serde_json::Value> = header
        .into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::Object(o) => {
                let o: BTreeMap<String, serde_json::Value> = o.into_iter().collect();
                (k, serde_json::to_value(o).expect("a map"))
            }
            v => (k, v),
        })
        .collect();
    let mut json = serde_json::to_vec(&sorted).expect("a map serialises");
    // The data must start 8-byte aligned, as safetensors pads it.
    json.resize(json.len().div_ceil(8) * 8, b' ');
    let mut out = Vec::with_capacity(8 + json.len() + bytes.len() - 8 - len);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&bytes[8 + len..]);
    out
}

/// Writes a model file atomically.
pub fn save(model: &ImageModel, path: &Path) -> Result<()> {
    crate::output::write_bytes(path, &to_bytes(model)?)
}

/// A model file of either kind: one network, or a colour fit's three planes.
#[derive(Clone, Debug, PartialEq)]
pub enum AnyModel {
    Network(Box<ImageModel>),
    Planes(Box<PlanesModel>),
}

impl AnyModel {
    pub fn height(&self) -> usize {
        match self {
            AnyModel::Network(m) => m.height,
            AnyModel::Planes(m) => m.height(),
        }
    }

    pub fn width(&self) -> usize {
        match self {
            AnyModel::Network(m) => m.width,
            AnyModel::Planes(m) => m.width(),
        }
    }

    /// Predicts the image at `height × width`, clamped to [0, 1].
    pub fn render(
        &self,
        choice: crate::backend::BackendChoice,
        adapter: Option<&str>,
        height: usize,
        width: usize,
    ) -> Result<crate::inr::Image> {
        match self {
            AnyModel::Network(m) => m.render(choice, adapter, height, width),
            AnyModel::Planes(m) => m.render(choice, adapter, height, width),
        }
    }

    /// Host memory a render at `height × width` will hold.
    pub fn render_memory(&self, height: usize, width: usize) -> crate::budget::Estimate {
        match self {
            AnyModel::Network(m) => m.render_memory(height, width),
            AnyModel::Planes(m) => m.render_memory(height, width),
        }
    }
}

/// Writes a model of three planes atomically.
pub fn save_planes(model: &PlanesModel, path: &Path) -> Result<()> {
    crate::output::write_bytes(path, &planes::to_bytes(model)?)
}

/// Reads and validates a model file of either kind (by its `format`).
pub fn load_any(path: &Path) -> Result<AnyModel> {
    load_with(path, any_from_bytes)
}

/// Parses model bytes of either kind; the error says what is wrong.
pub fn any_from_bytes(bytes: &[u8]) -> std::result::Result<AnyModel, String> {
    if format_of(bytes).as_deref() == Some(planes::FORMAT) {
        planes::from_bytes(bytes).map(|m| AnyModel::Planes(Box::new(m)))
    } else {
        from_bytes(bytes).map(|m| AnyModel::Network(Box::new(m)))
    }
}

/// Reads and validates a model file.
pub fn load(path: &Path) -> Result<ImageModel> {
    load_with(path, from_bytes)
}

/// Reads a model file of any kind with its parser; an I/O or parse error names the file.
pub(crate) fn load_with<T>(
    path: &Path,
    parse: impl FnOnce(&[u8]) -> std::result::Result<T, String>,
) -> Result<T> {
    let err = |msg| Error::Model {
        path: path.to_path_buf(),
        msg,
    };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    parse(&bytes).map_err(err)
}

/// The tensors and the metadata of a model file's bytes.
pub(crate) fn read_safetensors(
    bytes: &[u8],
) -> std::result::Result<(safetensors::SafeTensors<'_>, HashMap<String, String>), String> {
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| {
        format!("not a complete safetensors file ({e}); it may be truncated or corrupt — refit with `spinr fit`")
    })?;
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| e.to_string())?;
    let meta = header
        .metadata()
        .clone()
        .ok_or("no metadata: this is not a spinr model file")?;
    Ok((st, meta))
}

/// Parses and validates model bytes; the error says what is wrong.
pub fn from_bytes(bytes: &[u8]) -> std::result::Result<ImageModel, String> {
    if bytes.is_empty() {
        return Err("the file is empty (0 bytes)".into());
    }
    let (st, meta) = read_safetensors(bytes)?;
    let meta = &meta;

    let keys: BTreeSet<&str> = meta.keys().map(|k| k.as_str()).collect();
    if let Some(k) = keys.iter().find(|k| !KEYS.contains(k)) {
        return Err(format!(
            "unknown metadata key {k:?} (written by a newer spinr?)"
        ));
    }
    if let Some(k) = KEYS.iter().find(|k| !keys.contains(*k)) {
        return Err(format!("metadata key {k:?} is missing"));
    }
    let get = |k: &str| meta[k].as_str();
    if get("format") != FORMAT {
        return Err(format!(
            "format is {:?}, expected {FORMAT:?}",
            get("format")
        ));
    }
    fn num<T: std::str::FromStr>(
        meta: &HashMap<String, String>,
        k: &str,
    ) -> std::result::Result<T, String> {
        meta[k]
            .parse()
            .map_err(|_| format!("metadata {k} = {:?} is not a valid number", meta[k]))
    }
    let version: u32 = num(meta, "format_version")?;
    if version != FORMAT_VERSION {
        return Err(format!(
            "format version {version} is not supported (this spinr reads version {FORMAT_VERSION})"
        ));
    }
    let m: usize = num(meta, "m")?;
    let d: usize = num(meta, "d")?;
    let height: usize = num(meta, "height")?;
    let width: usize = num(meta, "width")?;
    let channels: usize = num(meta, "channels")?;
    let feature_seed: u64 = num(meta, "feature_seed")?;
    let gate_seed: u64 = num(meta, "gate_seed")?;
    if m == 0 {
        return Err("m = 0: a model needs at least one neuron".into());
    }
    if d < 2 || d % 2 != 0 {
        return Err(format!("d = {d} must be even and at least 2"));
    }
    let md = (m as u64)
        .checked_mul(d as u64)
        .filter(|&x| x <= u32::MAX as u64)
        .ok_or_else(|| format!("m·d = {m}·{d} exceeds the 32-bit index space"))?;
    if height == 0 || width == 0 {
        return Err(format!("image size {height}×{width} has no pixels"));
    }
    if channels != 1 && channels != 3 {
        return Err(format!("channels = {channels} (must be 1 or 3)"));
    }
    let sigma = get("sigma")
        .split(',')
        .map(|x| x.trim().parse::<f64>())
        .collect::<std::result::Result<Vec<f64>, _>>()
        .map_err(|_| {
            format!(
                "sigma = {:?} is not a comma-separated list of numbers",
                get("sigma")
            )
        })?;
    let axes = if channels == 1 { 2 } else { 3 };
    if sigma.len() != axes {
        return Err(format!(
            "sigma has {} values but a {channels}-channel image has {axes} axes",
            sigma.len()
        ));
    }
    if sigma.iter().any(|s| !s.is_finite() || *s < 0.0) {
        return Err(format!(
            "sigma = {:?} has a negative or non-finite value",
            get("sigma")
        ));
    }
    let coords = match get("coords") {
        "unit" => Coords::Unit,
        "pixel" => Coords::Pixel,
        c => return Err(format!("coords = {c:?} (must be unit or pixel)")),
    };
    let gates = match get("gates") {
        "sequential" => GateMode::Sequential,
        "convex" => GateMode::Convex,
        g => return Err(format!("gates = {g:?} (must be sequential or convex)")),
    };
    let gating = match get("gating") {
        "random" => Gating::Random,
        "relu" => Gating::SelfGated,
        g => return Err(format!("gating = {g:?} (must be random or relu)")),
    };
    if gating == Gating::SelfGated && gates != GateMode::Sequential {
        return Err("gating = relu needs gates = sequential".into());
    }
    let constant_feature = match get("constant_feature") {
        "true" => true,
        "false" => false,
        c => return Err(format!("constant_feature = {c:?} (must be true or false)")),
    };
    if get("spinr_version").is_empty() {
        return Err("spinr_version is empty".into());
    }

    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    let has = |n: &str| names.iter().any(|x| x == n);
    let (has_output, has_frequencies) = (has("output"), has("frequencies"));
    let has_dct = has("dct_indices") || has("dct_values");
    let expected =
        2 + usize::from(has_output) + usize::from(has_frequencies) + 2 * usize::from(has_dct);
    if !has("indices") || !has("values") || names.len() != expected {
        return Err(format!(
            "tensors are {names:?}, expected [\"indices\", \"values\"] and optionally \
             \"frequencies\", \"output\" and both of \"dct_indices\" and \"dct_values\""
        ));
    }
    let tensor = |name: &str, dtype: Dtype| -> std::result::Result<TensorView, String> {
        let t = st.tensor(name).map_err(|e| e.to_string())?;
        if t.dtype() != dtype {
            return Err(format!(
                "tensor {name} has dtype {:?}, expected {dtype:?}",
                t.dtype()
            ));
        }
        if t.shape().len() != 1 {
            return Err(format!(
                "tensor {name} has shape {:?}, expected one dimension [s]",
                t.shape()
            ));
        }
        Ok(t)
    };
    let ti = tensor("indices", Dtype::U32)?;
    let tv = tensor("values", Dtype::F32)?;
    if ti.shape() != tv.shape() {
        return Err(format!(
            "indices has {} entries but values has {}",
            ti.shape()[0],
            tv.shape()[0]
        ));
    }
    let indices = from_le(ti.data(), u32::from_le_bytes);
    if let Some(p) = indices.iter().position(|&i| i as u64 >= md) {
        return Err(format!(
            "index {} at position {p} is out of range (m·d = {md})",
            indices[p]
        ));
    }
    if let Some(p) = indices.windows(2).position(|w| w[0] >= w[1]) {
        return Err(format!(
            "indices are not strictly increasing at position {} ({} then {})",
            p + 1,
            indices[p],
            indices[p + 1]
        ));
    }
    let values = finite_f32s(&tv, "value")?;
    let output = if has_output {
        Some(read_output(&st, m, gating)?)
    } else {
        None
    };
    let dct = if has_dct {
        read_dct(tensor, (height, width, channels))?
    } else {
        DctTerms::default()
    };
    if has_output && !dct.is_empty() {
        return Err("a model with an output layer (IMP's) has no DCT terms".into());
    }
    let image_frequencies = if has_frequencies {
        read_frequencies(&st, d, axes, constant_feature)?
    } else {
        Vec::new()
    };
    Ok(ImageModel {
        spec: InrSpec {
            neurons: m,
            features: d,
            sigma,
            coords,
            feature_seed,
            gate_seed,
            gates,
            constant_feature,
            image_frequencies,
        },
        height,
        width,
        channels,
        gating,
        w: SparseVec { indices, values },
        output,
        dct,
    })
}

/// The `dct_indices` (u32 `[k]`) and `dct_values` (f32 `[k]`) tensors: the model's DCT terms
/// on its fitted grid, indices strictly increasing and inside it, values finite.
fn read_dct<'a>(
    tensor: impl Fn(&str, Dtype) -> std::result::Result<TensorView<'a>, String>,
    (height, width, channels): (usize, usize, usize),
) -> std::result::Result<DctTerms, String> {
    let ti = tensor("dct_indices", Dtype::U32)?;
    let tv = tensor("dct_values", Dtype::F32)?;
    let terms = DctTerms {
        indices: from_le(ti.data(), u32::from_le_bytes),
        values: finite_f32s(&tv, "DCT term value")?,
    };
    terms.check(height, width, channels)?;
    Ok(terms)
}

/// The `frequencies` tensor: f32, shape [r, axes] with `r` at most the rows the features
/// leave beside the constant one, finite.
fn read_frequencies(
    st: &safetensors::SafeTensors,
    d: usize,
    axes: usize,
    constant_feature: bool,
) -> std::result::Result<Vec<f32>, String> {
    let t = st.tensor("frequencies").map_err(|e| e.to_string())?;
    if t.dtype() != Dtype::F32 {
        return Err(format!(
            "tensor frequencies has dtype {:?}, expected F32",
            t.dtype()
        ));
    }
    let room = d / 2 - usize::from(constant_feature);
    match t.shape() {
        [r, a] if *a == axes && *r >= 1 && *r <= room => {}
        shape => {
            return Err(format!(
                "tensor frequencies has shape {shape:?}, expected [r, {axes}] with 1 ≤ r ≤ {room} \
                 (d = {d}, constant feature {constant_feature})"
            ))
        }
    }
    finite_f32s(&t, "frequency")
}

/// The little-endian f32 values of a tensor, refused naming the first that is not finite
/// (`what`: what one value is called in the error).
fn finite_f32s(t: &TensorView, what: &str) -> std::result::Result<Vec<f32>, String> {
    let v = from_le(t.data(), f32::from_le_bytes);
    if let Some(p) = v.iter().position(|x| !x.is_finite()) {
        return Err(format!("{what} {} at position {p} is not finite", v[p]));
    }
    Ok(v)
}

/// The `output` tensor: f32, shape `[m]` or `[m, C]`, finite; only with ReLU gating.
fn read_output(
    st: &safetensors::SafeTensors,
    m: usize,
    gating: Gating,
) -> std::result::Result<Vec<f32>, String> {
    if gating != Gating::SelfGated {
        return Err("an output layer needs gating = relu".into());
    }
    let t = st.tensor("output").map_err(|e| e.to_string())?;
    if t.dtype() != Dtype::F32 {
        return Err(format!(
            "tensor output has dtype {:?}, expected F32",
            t.dtype()
        ));
    }
    let shape = t.shape();
    let ok = match shape {
        [len] => *len == m,
        [rows, c] => *rows == m && *c >= 1,
        _ => false,
    };
    if !ok {
        return Err(format!(
            "tensor output has shape {shape:?}, expected [m] = [{m}] or [m, C]"
        ));
    }
    finite_f32s(&t, "output weight")
}

pub mod planes;

#[cfg(test)]
mod tests;
