//! Shared by the test binaries (`mod common;`): the GPU device, the `spinr` binary runners,
//! asset paths. Each binary uses a part of it.
#![allow(dead_code)]

use spinr::backend::gpu::GpuContext;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, OnceLock};

/// The device every test of this binary shares. Fails (never skips) without an adapter and
/// says how to get one.
pub fn gpu_ctx() -> Arc<GpuContext> {
    static CTX: OnceLock<Arc<GpuContext>> = OnceLock::new();
    CTX.get_or_init(|| {
        GpuContext::new(None, false).unwrap_or_else(|e| {
            panic!(
                "the GPU tests need a GPU adapter and found none ({e}). Install one: \
                 `apt-get install mesa-vulkan-drivers` gives the lavapipe software adapter"
            )
        })
    })
    .clone()
}

/// The `spinr` binary, to run in `dir`.
pub fn command(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_spinr"));
    c.current_dir(dir);
    c
}

/// Runs `spinr args` in `dir`.
pub fn spinr_in(dir: &Path, args: &[&str]) -> Output {
    command(dir).args(args).output().expect("run spinr")
}

/// Runs `spinr args` in a fresh temporary directory (removed afterwards).
pub fn spinr(args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    spinr_in(dir.path(), args)
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The JSON a successful run printed on stdout, read strictly into `T` (asserts success,
/// showing stderr otherwise).
pub fn json<T: serde::de::DeserializeOwned>(out: &Output) -> T {
    assert!(out.status.success(), "{}", stderr(out));
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON document")
}

/// A file under `assets/`.
pub fn asset(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("assets")
        .join(rel)
}

/// The MNIST test images (idx, gzip).
pub fn mnist() -> PathBuf {
    asset("mnist/images-idx3-ubyte.gz")
}
