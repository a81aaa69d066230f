//! The Rust ↔ WGSL interface cannot drift: every composed kernel module, parsed by naga, must
//! hold the structs, bindings and constants of `src/backend/gpu/interface.rs` with the same
//! member names, types and byte offsets (WGSL's layout rules against Rust's `#[repr(C)]`) and
//! the same values. Needs no adapter.

use naga::{AddressSpace, Expression, Literal, Module, ScalarKind, StorageAccess, TypeInner};
use spinr::backend::gpu::interface::{Access, Cfg, Op, SharedStruct, BINDINGS, SHARED_CONSTS};
use spinr::backend::gpu::{compose_shader, SHADER_FILES};

/// How WGSL spells a naga type (the spellings `interface.rs` uses).
fn wgsl_name(module: &Module, ty: naga::Handle<naga::Type>) -> String {
    let t = &module.types[ty];
    if let Some(name) = &t.name {
        return name.clone();
    }
    let scalar = |s: naga::Scalar| match (s.kind, s.width) {
        (ScalarKind::Uint, 4) => "u32".to_string(),
        (ScalarKind::Sint, 4) => "i32".to_string(),
        (ScalarKind::Float, 4) => "f32".to_string(),
        other => format!("{other:?}"),
    };
    match &t.inner {
        TypeInner::Scalar(s) => scalar(*s),
        TypeInner::Vector { size, scalar: s } => format!("vec{}<{}>", *size as u8, scalar(*s)),
        TypeInner::Atomic(s) => format!("atomic<{}>", scalar(*s)),
        TypeInner::Array {
            base,
            size: naga::ArraySize::Dynamic,
            ..
        } => format!("array<{}>", wgsl_name(module, *base)),
        other => format!("{other:?}"),
    }
}

/// Every difference between the Rust description of `S` and the struct of that name in
/// `module`.
fn struct_drift<S: SharedStruct>(module: &Module, out: &mut Vec<String>) {
    let Some((_, ty)) = module
        .types
        .iter()
        .find(|(_, t)| t.name.as_deref() == Some(S::NAME))
    else {
        out.push(format!("struct {} is missing from the WGSL", S::NAME));
        return;
    };
    let TypeInner::Struct { members, span } = &ty.inner else {
        out.push(format!("{} is not a struct in the WGSL", S::NAME));
        return;
    };
    if *span as usize != S::SIZE {
        out.push(format!(
            "{}: WGSL size {span} bytes, Rust size_of {} bytes",
            S::NAME,
            S::SIZE
        ));
    }
    if members.len() != S::MEMBERS.len() {
        out.push(format!(
            "{}: {} members in WGSL, {} in Rust",
            S::NAME,
            members.len(),
            S::MEMBERS.len()
        ));
    }
    // The first member that differs, and how many more do (a misplaced member shifts all
    // that follow).
    let mut first = None;
    let mut more = 0;
    for (w, r) in members.iter().zip(S::MEMBERS) {
        let name = w.name.as_deref().unwrap_or("?");
        let ty = wgsl_name(module, w.ty);
        if name != r.name || ty != r.wgsl_type || w.offset as usize != r.offset {
            if first.is_some() {
                more += 1;
                continue;
            }
            first = Some(format!(
                "{}: WGSL member `{name}: {ty}` at byte {}, Rust field `{}: {}` at byte {}",
                S::NAME,
                w.offset,
                r.name,
                r.wgsl_type,
                r.offset
            ));
        }
    }
    if let Some(f) = first {
        out.push(if more > 0 {
            format!("{f} (and {more} later members differ)")
        } else {
            f
        });
    }
}

fn const_drift(module: &Module, out: &mut Vec<String>) {
    for c in SHARED_CONSTS {
        let found = module
            .constants
            .iter()
            .find(|(_, k)| k.name.as_deref() == Some(c.name));
        let Some((_, k)) = found else {
            out.push(format!("const {} is missing from the WGSL", c.name));
            continue;
        };
        let ty = wgsl_name(module, k.ty);
        match module.global_expressions[k.init] {
            Expression::Literal(Literal::U32(v)) if ty == "u32" && v as u64 == c.value => {}
            ref e => out.push(format!(
                "const {}: WGSL {ty} = {e:?}, Rust {}",
                c.name, c.value
            )),
        }
    }
}

fn binding_drift(module: &Module, out: &mut Vec<String>) {
    for b in BINDINGS {
        let found = module
            .global_variables
            .iter()
            .find(|(_, g)| g.name.as_deref() == Some(b.name));
        let Some((_, g)) = found else {
            out.push(format!("binding {} is missing from the WGSL", b.name));
            continue;
        };
        let space = match g.space {
            AddressSpace::Uniform => Some(Access::Uniform),
            AddressSpace::Storage { access } if access == StorageAccess::LOAD => Some(Access::Read),
            AddressSpace::Storage { access }
                if access == StorageAccess::LOAD | StorageAccess::STORE =>
            {
                Some(Access::ReadWrite)
            }
            _ => None,
        };
        // A dynamic offset is a property of the bind group layout, not of the WGSL.
        let want = match b.access {
            Access::UniformDynamic => Access::Uniform,
            a => a,
        };
        let at = g.binding.as_ref().map(|r| (r.group, r.binding));
        let ty = wgsl_name(module, g.ty);
        if at != Some((0, b.index)) || space != Some(want) || ty != b.wgsl_type {
            out.push(format!(
                "binding {}: WGSL {at:?} {:?} {ty}, Rust (0, {}) {:?} {}",
                b.name, g.space, b.index, b.access, b.wgsl_type
            ));
        }
    }
}

#[test]
fn every_kernel_module_matches_the_rust_interface() {
    // Each difference, with the modules it was found in.
    let mut drift: Vec<(String, Vec<&str>)> = Vec::new();
    for &(name, src) in SHADER_FILES {
        for subgroups in [false, true] {
            let text = compose_shader(src, subgroups);
            let module = naga::front::wgsl::parse_str(&text)
                .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(&text)));
            let mut here = Vec::new();
            struct_drift::<Cfg>(&module, &mut here);
            struct_drift::<Op>(&module, &mut here);
            const_drift(&module, &mut here);
            binding_drift(&module, &mut here);
            for d in here {
                match drift.iter_mut().find(|(m, _)| *m == d) {
                    Some((_, files)) => files.push(name),
                    None => drift.push((d, vec![name])),
                }
            }
        }
    }
    let lines: Vec<String> = drift
        .into_iter()
        .map(|(d, mut files)| {
            files.dedup();
            format!("{d} [{}]", files.join(", "))
        })
        .collect();
    assert!(
        lines.is_empty(),
        "the composed WGSL and src/backend/gpu/interface.rs disagree:\n  {}",
        lines.join("\n  ")
    );
}

/// The vector-output module (self-contained, not composed): its parameter block and bindings
/// against `src/backend/vector/gpu.rs`.
#[test]
fn the_vector_module_matches_its_rust_side() {
    use spinr::backend::vector::gpu::{VectorParams, BINDINGS, VECTOR_WGSL};
    let module = naga::front::wgsl::parse_str(VECTOR_WGSL)
        .unwrap_or_else(|e| panic!("vector.wgsl: {}", e.emit_to_string(VECTOR_WGSL)));
    let mut drift = Vec::new();
    struct_drift::<VectorParams>(&module, &mut drift);
    for (name, index, read_only) in BINDINGS {
        let found = module
            .global_variables
            .iter()
            .find(|(_, g)| g.name.as_deref() == Some(name));
        let Some((_, g)) = found else {
            drift.push(format!("binding {name} is missing from vector.wgsl"));
            continue;
        };
        let at = g.binding.as_ref().map(|r| (r.group, r.binding));
        let ro =
            matches!(g.space, AddressSpace::Storage { access } if access == StorageAccess::LOAD);
        if at != Some((0, index)) || ro != read_only {
            drift.push(format!(
                "binding {name}: WGSL {at:?} read-only {ro}, Rust (0, {index}) read-only {read_only}"
            ));
        }
    }
    assert!(
        drift.is_empty(),
        "vector.wgsl and src/backend/vector/gpu.rs disagree:\n  {}",
        drift.join("\n  ")
    );
}
