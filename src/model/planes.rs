//! Model files of colour fits in luma and chroma planes ([`crate::inr::planes`]): safetensors
//! with three `U8` tensors named after the planes (`luma`, `chroma-rb`, `chroma-gm`), each a
//! complete one-network model file read by the same strict parser as a file of its own, and
//! the metadata `format` ([`FORMAT`]), `format_version`, `spinr_version` and `colour`
//! (`luma-chroma`). Every plane is a one-channel model of the same fitted size.

use super::canonical;
use crate::error::{Error, Result};
use crate::inr::planes::{PlanesModel, PLANES};
use safetensors::tensor::{Dtype, TensorView};
use std::collections::HashMap;

/// Identifies model files of colour fits in planes.
pub const FORMAT: &str = "spinr-inr-planes";
/// Bumped whenever the meaning of such a file changes; readers refuse other versions.
pub const FORMAT_VERSION: u32 = 1;

const KEYS: [&str; 4] = ["colour", "format", "format_version", "spinr_version"];

/// Serialises a model of three planes.
pub fn to_bytes(model: &PlanesModel) -> Result<Vec<u8>> {
    let files = model
        .planes
        .iter()
        .map(super::to_bytes)
        .collect::<Result<Vec<_>>>()?;
    let ser = |e: safetensors::SafeTensorError| Error::Io {
        path: "model".into(),
        msg: format!("cannot serialise the model: {e}"),
    };
    let mut tensors = Vec::with_capacity(3);
    for (name, bytes) in PLANES.iter().zip(&files) {
        tensors.push((
            *name,
            TensorView::new(Dtype::U8, vec![bytes.len()], bytes).map_err(ser)?,
        ));
    }
    let meta: HashMap<String, String> = [
        ("format", FORMAT.to_string()),
        ("format_version", FORMAT_VERSION.to_string()),
        ("spinr_version", env!("CARGO_PKG_VERSION").to_string()),
        ("colour", "luma-chroma".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Ok(canonical(
        safetensors::serialize(tensors, Some(meta)).map_err(ser)?,
    ))
}

/// Parses and validates the bytes of a model of three planes; the error says what is wrong.
pub fn from_bytes(bytes: &[u8]) -> std::result::Result<PlanesModel, String> {
    let (st, meta) = super::read_safetensors(bytes)?;
    if let Some(k) = meta.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(format!(
            "unknown metadata key {k:?} (written by a newer spinr?)"
        ));
    }
    if let Some(k) = KEYS.iter().find(|k| !meta.contains_key(**k)) {
        return Err(format!("metadata key {k:?} is missing"));
    }
    if meta["format"] != FORMAT {
        return Err(format!(
            "format is {:?}, expected {FORMAT:?}",
            meta["format"]
        ));
    }
    if meta["format_version"] != FORMAT_VERSION.to_string() {
        return Err(format!(
            "format version {:?} is not supported (this spinr reads version {FORMAT_VERSION})",
            meta["format_version"]
        ));
    }
    if meta["colour"] != "luma-chroma" {
        return Err(format!(
            "colour = {:?} (must be luma-chroma)",
            meta["colour"]
        ));
    }
    if meta["spinr_version"].is_empty() {
        return Err("spinr_version is empty".into());
    }
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    let mut want: Vec<String> = PLANES.iter().map(|p| p.to_string()).collect();
    want.sort();
    if names != want {
        return Err(format!("tensors are {names:?}, expected {want:?}"));
    }
    let mut planes = Vec::with_capacity(3);
    for name in PLANES {
        let t = st.tensor(name).map_err(|e| e.to_string())?;
        if t.dtype() != Dtype::U8 || t.shape().len() != 1 {
            return Err(format!(
                "tensor {name} has dtype {:?} and shape {:?}, expected U8 bytes of a model file",
                t.dtype(),
                t.shape()
            ));
        }
        let m = super::from_bytes(t.data()).map_err(|e| format!("plane {name}: {e}"))?;
        if m.channels != 1 || m.output.is_some() {
            return Err(format!("plane {name} is not a one-channel sum of ReLUs"));
        }
        planes.push(m);
    }
    if planes
        .iter()
        .any(|m| (m.height, m.width) != (planes[0].height, planes[0].width))
    {
        return Err("the planes were fitted at different sizes".into());
    }
    Ok(PlanesModel {
        planes: planes.try_into().expect("three planes"),
    })
}
