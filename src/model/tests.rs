//! Round trips and the strict reader's refusals.
use super::*;

fn model() -> ImageModel {
    ImageModel {
        spec: InrSpec {
            neurons: 3,
            features: 8,
            sigma: vec![12.5, 0.1 + 0.2, 0.05],
            coords: Coords::Unit,
            feature_seed: u64::MAX,
            gate_seed: 7,
            gates: GateMode::Sequential,
            constant_feature: true,
            image_frequencies: Vec::new(),
        },
        height: 5,
        width: 4,
        channels: 3,
        gating: Gating::SelfGated,
        w: SparseVec::from_pairs(vec![(0, 1.5), (9, -2.25), (23, 1e-30)]),
        output: None,
        dct: Default::default(),
    }
}

fn with_output() -> ImageModel {
    ImageModel {
        output: Some(vec![0.5, -1.25, 3.0]),
        ..model()
    }
}

/// Rewrites the metadata of a valid file (to build bad ones).
fn with_meta(edit: impl FnOnce(&mut HashMap<String, String>)) -> Vec<u8> {
    let bytes = to_bytes(&model()).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut meta = header.metadata().clone().unwrap();
    edit(&mut meta);
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let tensors = vec![
        ("indices", st.tensor("indices").unwrap()),
        ("values", st.tensor("values").unwrap()),
    ];
    safetensors::serialize(tensors, Some(meta)).unwrap()
}

fn err(bytes: &[u8]) -> String {
    from_bytes(bytes).unwrap_err()
}

#[test]
fn round_trip_is_exact() {
    let m = model();
    assert_eq!(from_bytes(&to_bytes(&m).unwrap()).unwrap(), m);
}

fn with_frequencies(f: Vec<f32>) -> ImageModel {
    let mut m = model();
    m.spec.image_frequencies = f;
    m
}

#[test]
fn round_trip_with_image_frequencies_is_exact() {
    // Three rows of (rows, columns, channel) beside the constant feature's.
    let m = with_frequencies(vec![1.5, -4.0, 0.01, 0.5, 2.0, -0.03, 7.0, 0.0, 0.0]);
    let back = from_bytes(&to_bytes(&m).unwrap()).unwrap();
    assert_eq!(back, m);
    assert_eq!(
        back.spec.fourier(Vec::new()).frequencies()[3..],
        [1.5, -4.0, 0.01, 0.5, 2.0, -0.03, 7.0, 0.0, 0.0].map(|x: f32| x as f64)
    );
    // Too many rows (row 0 is the constant feature's), half a row, or not finite: refused.
    for bad in [vec![1.0; 12], vec![f32::INFINITY, 1.0, 1.0]] {
        let e = err(&to_bytes(&with_frequencies(bad)).unwrap());
        assert!(e.contains("frequenc"), "{e}");
    }
    assert!(to_bytes(&with_frequencies(vec![1.0; 4])).is_err());
}

fn with_terms(indices: Vec<u32>, values: Vec<f32>) -> ImageModel {
    ImageModel {
        dct: DctTerms { indices, values },
        ..model()
    }
}

#[test]
fn round_trip_with_dct_terms_is_exact() {
    // The 5×4×3 grid has 60 coefficients.
    let m = with_terms(vec![0, 7, 59], vec![0.25, -1e-3, 3.5]);
    let back = from_bytes(&to_bytes(&m).unwrap()).unwrap();
    assert_eq!(back, m);
    assert_eq!(back.nonzeros(), 6);
    // Outside the grid, out of order, not finite, or beside an output layer: refused.
    for (bad, what) in [
        (with_terms(vec![60], vec![1.0]), "outside"),
        (with_terms(vec![3, 3], vec![1.0, 2.0]), "ascending"),
        (with_terms(vec![3], vec![f32::NAN]), "finite"),
        (
            ImageModel {
                output: Some(vec![0.5, -1.25, 3.0]),
                ..with_terms(vec![1], vec![1.0])
            },
            "output layer",
        ),
    ] {
        let e = err(&to_bytes(&bad).unwrap());
        assert!(e.contains(what), "{e}");
    }
    // One of the two tensors alone is not a model.
    let bytes = to_bytes(&m).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let tensors = vec![
        ("indices", st.tensor("indices").unwrap()),
        ("values", st.tensor("values").unwrap()),
        ("dct_values", st.tensor("dct_values").unwrap()),
    ];
    let half = safetensors::serialize(tensors, header.metadata().clone()).unwrap();
    assert!(err(&half).contains("dct_indices"), "{}", err(&half));
}

#[test]
fn round_trip_with_an_output_layer_is_exact() {
    let m = with_output();
    assert_eq!(from_bytes(&to_bytes(&m).unwrap()).unwrap(), m);
    // [m, C] with C > 1 reads back too.
    let wide = ImageModel {
        output: Some((0..6).map(|i| i as f32 - 2.5).collect()),
        ..model()
    };
    assert_eq!(from_bytes(&to_bytes(&wide).unwrap()).unwrap(), wide);
    // Files without the tensor stay IHT models.
    assert_eq!(
        from_bytes(&to_bytes(&model()).unwrap()).unwrap().output,
        None
    );
}

#[test]
fn output_layers_are_checked() {
    let bad = ImageModel {
        output: Some(vec![1.0, 2.0]),
        ..model()
    };
    assert!(to_bytes(&bad).is_err());
    let nan = ImageModel {
        output: Some(vec![1.0, f32::INFINITY, 2.0]),
        ..model()
    };
    assert!(err(&to_bytes(&nan).unwrap()).contains("not finite"));
    let mut random = with_output();
    random.gating = Gating::Random;
    random.spec.gates = GateMode::Convex;
    assert!(err(&to_bytes(&random).unwrap()).contains("gating = relu"));
    // A shape that does not match m (rewritten by hand: the writer refuses it).
    let bytes = to_bytes(&model()).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().clone().unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let out: Vec<u8> = [1f32, 2.0, 3.0, 4.0]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let tensors = vec![
        ("indices", st.tensor("indices").unwrap()),
        ("values", st.tensor("values").unwrap()),
        (
            "output",
            TensorView::new(Dtype::F32, vec![4], &out).unwrap(),
        ),
    ];
    let e = err(&safetensors::serialize(tensors, Some(meta)).unwrap());
    assert!(e.contains("shape [4]"), "{e}");
}

#[test]
fn truncation_anywhere_is_detected() {
    let bytes = to_bytes(&model()).unwrap();
    for cut in [
        0,
        1,
        7,
        8,
        20,
        bytes.len() / 2,
        bytes.len() - 4,
        bytes.len() - 1,
    ] {
        let e = err(&bytes[..cut]);
        assert!(
            e.contains("empty") || e.contains("truncated"),
            "cut {cut}: {e}"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(err(&longer).contains("corrupt"));
}

#[test]
fn corrupt_header_is_detected() {
    let mut bytes = to_bytes(&model()).unwrap();
    bytes[10] = b'#';
    assert!(err(&bytes).contains("corrupt"));
}

#[test]
fn metadata_is_checked_strictly() {
    assert!(err(&with_meta(|m| {
        m.remove("gate_seed");
    }))
    .contains("\"gate_seed\" is missing"));
    assert!(err(&with_meta(|m| {
        m.insert("bias".into(), "1".into());
    }))
    .contains("unknown metadata key \"bias\""));
    assert!(err(&with_meta(|m| {
        m.insert("m".into(), "three".into());
    }))
    .contains("m = \"three\""));
    assert!(err(&with_meta(|m| {
        m.insert("sigma".into(), "1,2".into());
    }))
    .contains("3 axes"));
    assert!(err(&with_meta(|m| {
        m.insert("format_version".into(), "2".into());
    }))
    .contains("version 2"));
    assert!(err(&with_meta(|m| {
        m.insert("d".into(), "7".into());
    }))
    .contains("even"));
}

#[test]
fn indices_and_values_are_checked() {
    // m·d = 24 when m = 3, d = 8; shrink m so that index 23 is out of range.
    assert!(err(&with_meta(|m| {
        m.insert("m".into(), "2".into());
    }))
    .contains("out of range"));
    let mut bad = model();
    bad.w.values[1] = f32::NAN;
    assert!(err(&to_bytes(&bad).unwrap()).contains("not finite"));
    let mut unsorted = model();
    unsorted.w.indices.swap(0, 1);
    assert!(err(&to_bytes(&unsorted).unwrap()).contains("strictly increasing"));
}

fn planes_model() -> PlanesModel {
    let plane = |w: Vec<(u32, f32)>| ImageModel {
        channels: 1,
        spec: InrSpec {
            sigma: vec![12.5, 9.0],
            ..model().spec
        },
        w: SparseVec::from_pairs(w),
        ..model()
    };
    PlanesModel {
        planes: [
            plane(vec![(0, 1.5), (9, -2.25)]),
            plane(vec![(4, 0.5)]),
            plane(vec![]),
        ],
    }
}

#[test]
fn planes_round_trip_and_byte_determinism() {
    let m = planes_model();
    let bytes = planes::to_bytes(&m).unwrap();
    assert_eq!(bytes, planes::to_bytes(&m).unwrap());
    assert_eq!(
        any_from_bytes(&bytes).unwrap(),
        AnyModel::Planes(Box::new(m.clone()))
    );
    // A one-network file still reads as one.
    let one = to_bytes(&model()).unwrap();
    assert_eq!(
        any_from_bytes(&one).unwrap(),
        AnyModel::Network(Box::new(model()))
    );
    // The strict one-network reader does not take a planes file.
    assert!(from_bytes(&bytes).is_err());
}

#[test]
fn planes_files_with_a_bad_plane_are_refused_naming_it() {
    // A three-channel plane.
    let mut m = planes_model();
    m.planes[1].channels = 3;
    m.planes[1].spec.sigma = vec![1.0, 1.0, 0.05];
    let err = planes::from_bytes(&planes::to_bytes(&m).unwrap()).unwrap_err();
    assert!(err.contains("chroma-rb"), "{err}");
    // Planes of different sizes.
    let mut m = planes_model();
    m.planes[2].width = 7;
    let err = planes::from_bytes(&planes::to_bytes(&m).unwrap()).unwrap_err();
    assert!(err.contains("different sizes"), "{err}");
    // A plane whose own bytes are damaged: its error, with its name.
    let mut m = planes_model();
    m.planes[0].w.values[0] = f32::NAN;
    let err = planes::from_bytes(&planes::to_bytes(&m).unwrap()).unwrap_err();
    assert!(err.contains("luma") && err.contains("not finite"), "{err}");
}
