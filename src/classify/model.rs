//! Classifier model files: safetensors, format `spinr-classifier`, self-describing like the
//! image models. Per layer `l`: tensors `l{l}.indices` (u32, flat `j·d + k`) and `l{l}.values`
//! (f32), and `l{l}.output` (f32, `m·C`, row-major) when the layer has output weights; metadata
//! `format`, `format_version`, `spinr_version`, `task`, `classes`, `input_scale`, `layers`, and
//! per layer `m{l}`, `d{l}`. Reading is strict: every inconsistency is an error naming it.

use super::{ClassTask, Layer, SparseNet};
use crate::error::{Error, Result};
use crate::model::{from_le, le_bytes};
use crate::sparse::SparseVec;
use safetensors::tensor::{Dtype, TensorView};
use std::collections::HashMap;
use std::path::Path;

pub const FORMAT: &str = "spinr-classifier";
pub const FORMAT_VERSION: u32 = 1;

/// A saved classifier: the network and what it classifies.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassifierModel {
    pub task: ClassTask,
    pub classes: usize,
    pub net: SparseNet,
}

pub fn to_bytes(model: &ClassifierModel) -> Result<Vec<u8>> {
    let net = &model.net;
    let mut meta: HashMap<String, String> = [
        ("format", FORMAT.to_string()),
        ("format_version", FORMAT_VERSION.to_string()),
        ("spinr_version", env!("CARGO_PKG_VERSION").to_string()),
        ("task", model.task.as_str().to_string()),
        ("classes", model.classes.to_string()),
        ("input_scale", net.input_scale.to_string()),
        ("layers", net.layers.len().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let mut buffers: Vec<(String, Dtype, usize, Vec<u8>)> = Vec::new();
    for (l, layer) in net.layers.iter().enumerate() {
        meta.insert(format!("m{l}"), layer.m.to_string());
        meta.insert(format!("d{l}"), layer.d.to_string());
        let s = layer.w.len();
        buffers.push((
            format!("l{l}.indices"),
            Dtype::U32,
            s,
            le_bytes(&layer.w.indices, u32::to_le_bytes),
        ));
        buffers.push((
            format!("l{l}.values"),
            Dtype::F32,
            s,
            le_bytes(&layer.w.values, f32::to_le_bytes),
        ));
        if let Some(o) = &layer.output {
            buffers.push((
                format!("l{l}.output"),
                Dtype::F32,
                o.len(),
                le_bytes(o, f32::to_le_bytes),
            ));
        }
    }
    let ser = |e: safetensors::SafeTensorError| Error::Io {
        path: "model".into(),
        msg: format!("cannot serialise the model: {e}"),
    };
    let mut views = Vec::new();
    for (name, dtype, len, bytes) in &buffers {
        views.push((
            name.as_str(),
            TensorView::new(*dtype, vec![*len], bytes).map_err(ser)?,
        ));
    }
    safetensors::serialize(views, Some(meta)).map_err(ser)
}

pub fn save(model: &ClassifierModel, path: &Path) -> Result<()> {
    crate::output::write_bytes(path, &to_bytes(model)?)
}

pub fn load(path: &Path) -> Result<ClassifierModel> {
    crate::model::load_with(path, from_bytes)
}

pub fn from_bytes(bytes: &[u8]) -> std::result::Result<ClassifierModel, String> {
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| format!("not a complete safetensors file ({e})"))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| e.to_string())?;
    let meta = header
        .metadata()
        .as_ref()
        .ok_or("no metadata: this is not a spinr model file")?;
    let get = |k: &str| -> std::result::Result<&str, String> {
        meta.get(k)
            .map(|s| s.as_str())
            .ok_or_else(|| format!("metadata key {k:?} is missing"))
    };
    fn num<T: std::str::FromStr>(k: &str, v: &str) -> std::result::Result<T, String> {
        v.parse()
            .map_err(|_| format!("metadata {k} = {v:?} is not a valid number"))
    }
    if get("format")? != FORMAT {
        return Err(format!(
            "format is {:?}, expected {FORMAT:?} (image models are read by `spinr render`)",
            get("format")?
        ));
    }
    let version: u32 = num("format_version", get("format_version")?)?;
    if version != FORMAT_VERSION {
        return Err(format!(
            "format version {version} is not supported (this spinr reads {FORMAT_VERSION})"
        ));
    }
    let task = match get("task")? {
        "binary" => ClassTask::Binary,
        "multiclass" => ClassTask::Multiclass,
        t => return Err(format!("task {t:?} is not binary or multiclass")),
    };
    let classes: usize = num("classes", get("classes")?)?;
    let input_scale: f32 = num("input_scale", get("input_scale")?)?;
    let layers: usize = num("layers", get("layers")?)?;
    if !(1..=8).contains(&layers) || !(2..=256).contains(&classes) {
        return Err(format!("{layers} layers, {classes} classes: out of range"));
    }
    let mut known: Vec<String> = [
        "format",
        "format_version",
        "spinr_version",
        "task",
        "classes",
        "input_scale",
        "layers",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let tensor = |name: &str, dtype: Dtype| -> std::result::Result<Option<Vec<u8>>, String> {
        match st.tensor(name) {
            Err(_) => Ok(None),
            Ok(t) if t.dtype() == dtype && t.shape().len() == 1 => Ok(Some(t.data().to_vec())),
            Ok(_) => Err(format!("tensor {name} has the wrong type or shape")),
        }
    };
    let mut net = SparseNet {
        input_scale,
        layers: Vec::new(),
    };
    for l in 0..layers {
        let (mk, dk) = (format!("m{l}"), format!("d{l}"));
        let m: usize = num(&mk, get(&mk)?)?;
        let d: usize = num(&dk, get(&dk)?)?;
        known.push(mk);
        known.push(dk);
        if m == 0 || d == 0 || (m as u64) * (d as u64) > u32::MAX as u64 {
            return Err(format!(
                "layer {l}: {m} units over {d} inputs is out of range"
            ));
        }
        let idx = tensor(&format!("l{l}.indices"), Dtype::U32)?
            .ok_or(format!("tensor l{l}.indices is missing"))?;
        let val = tensor(&format!("l{l}.values"), Dtype::F32)?
            .ok_or(format!("tensor l{l}.values is missing"))?;
        if idx.len() != val.len() {
            return Err(format!("layer {l}: indices and values differ in length"));
        }
        let w = SparseVec {
            indices: from_le(&idx, u32::from_le_bytes),
            values: from_le(&val, f32::from_le_bytes),
        };
        let output =
            tensor(&format!("l{l}.output"), Dtype::F32)?.map(|b| from_le(&b, f32::from_le_bytes));
        net.layers.push(Layer { m, d, w, output });
    }
    if let Some(k) = meta.keys().find(|k| !known.contains(k)) {
        return Err(format!(
            "unknown metadata key {k:?} (written by a newer spinr?)"
        ));
    }
    let expected_tensors: usize = net
        .layers
        .iter()
        .map(|l| 2 + l.output.is_some() as usize)
        .sum();
    if st.len() != expected_tensors {
        return Err("unexpected tensors in the file".into());
    }
    net.check().map_err(|e| e.to_string())?;
    let outputs = net.outputs();
    let expected_outputs = if task == ClassTask::Binary {
        1
    } else {
        classes
    };
    if outputs != expected_outputs {
        return Err(format!(
            "the network has {outputs} outputs for a {} task with {classes} classes",
            task.as_str()
        ));
    }
    Ok(ClassifierModel { task, classes, net })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> ClassifierModel {
        ClassifierModel {
            task: ClassTask::Multiclass,
            classes: 3,
            net: SparseNet {
                input_scale: 1.0 / 255.0,
                layers: vec![
                    Layer {
                        m: 2,
                        d: 4,
                        w: SparseVec::from_pairs(vec![(1, 0.5), (6, -1.0)]),
                        output: None,
                    },
                    Layer {
                        m: 2,
                        d: 2,
                        w: SparseVec::from_pairs(vec![(0, 1.5)]),
                        output: Some(vec![1.0, 0.0, -2.0, 0.5, 0.25, 3.0]),
                    },
                ],
            },
        }
    }

    #[test]
    fn round_trips_and_refuses_corruption() {
        let m = model();
        let b = to_bytes(&m).unwrap();
        assert_eq!(from_bytes(&b).unwrap(), m);
        assert!(from_bytes(&b[..b.len() - 3]).is_err());
        let mut bad = m.clone();
        bad.task = ClassTask::Binary;
        let e = from_bytes(&to_bytes(&bad).unwrap()).unwrap_err();
        assert!(e.contains("3 outputs"), "{e}");
        let mut bad = m;
        bad.net.layers[1].d = 3;
        assert!(from_bytes(&to_bytes(&bad).unwrap()).is_err());
    }
}
