//! Every `shaders/*.wgsl` kernel file, composed with the generated interface and `common.wgsl`
//! exactly as the GPU backend composes it, must parse and validate with naga (all validation
//! flags and capabilities), as wgpu's own `tests/tests/example_wgsl.rs` does. Needs no adapter.

use spinr::backend::gpu::interface::wgsl_prelude;
use spinr::backend::gpu::{
    compose_shader, BITS_ATOMIC_WGSL, BITS_SUBGROUP_WGSL, COMMON_WGSL, SHADER_FILES,
};

/// Files compiled on their own (own bindings, no common prelude).
const STANDALONE: &[&str] = &["ceiling", "mlp", "vector"];
/// Helper files appended by `compose_shader` (checked through every kernel file).
const HELPERS: &[(&str, &str)] = &[
    ("bits_atomic", BITS_ATOMIC_WGSL),
    ("bits_subgroup", BITS_SUBGROUP_WGSL),
];
use std::path::Path;

fn validate(name: &str, source: &str) {
    let module = naga::front::wgsl::parse_str(source)
        .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(source)));
    let mut validator = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    );
    let info = validator
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(source)));
    // Workgroup memory per entry point (the variables it uses): D3D12 and Metal allow at most
    // 32 KiB, and a kernel over it fails to compile there while Vulkan drivers may accept it.
    for (i, ep) in module.entry_points.iter().enumerate() {
        let uses = info.get_entry_point(i);
        let bytes: u32 = module
            .global_variables
            .iter()
            .filter(|(h, v)| v.space == naga::AddressSpace::WorkGroup && !uses[*h].is_empty())
            .map(|(_, v)| module.types[v.ty].inner.size(module.to_ctx()))
            .sum();
        assert!(
            bytes <= spinr::backend::gpu::WORKGROUP_MEMORY_LIMIT,
            "{name}: entry point {} uses {bytes} bytes of workgroup memory, over the {} that \
             D3D12 and Metal allow",
            ep.name,
            spinr::backend::gpu::WORKGROUP_MEMORY_LIMIT
        );
    }
}

#[test]
fn every_shader_file_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("shaders/ exists") {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("wgsl") {
            continue;
        }
        let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        if STANDALONE.contains(&stem.as_str()) {
            validate(&format!("{stem}.wgsl"), &text);
            continue;
        }
        if let Some((_, compiled)) = HELPERS.iter().find(|(n, _)| *n == stem) {
            assert_eq!(
                &text, compiled,
                "{stem}.wgsl differs from the compiled-in copy"
            );
            continue;
        }
        if stem == "common" {
            assert_eq!(
                text, COMMON_WGSL,
                "common.wgsl differs from the compiled-in copy"
            );
            // The prelude alone must be a valid module too.
            validate("common.wgsl", &format!("{}\n{text}", wgsl_prelude()));
            continue;
        }
        let compiled = SHADER_FILES
            .iter()
            .find(|(n, _)| *n == stem)
            .unwrap_or_else(|| panic!("{stem}.wgsl is not compiled into the backend"));
        assert_eq!(
            compiled.1, text,
            "{stem}.wgsl differs from the compiled-in copy"
        );
        // Both variants: the portable one and the one with subgroup operations.
        validate(&format!("{stem}.wgsl"), &compose_shader(&text, false));
        validate(
            &format!("{stem}.wgsl (subgroups)"),
            &compose_shader(&text, true),
        );
        seen += 1;
    }
    assert_eq!(
        seen,
        SHADER_FILES.len(),
        "a compiled-in kernel file is missing from shaders/"
    );
}
