//! A headless start is quiet: without `XDG_RUNTIME_DIR` (or with a stale one) the Wayland
//! client library loaded by the GPU drivers would print an error line on every run; `main`
//! points the variable at a private folder first.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_spinr");

fn devices_stderr(xdg: Option<&str>) -> String {
    let mut cmd = Command::new(BIN);
    cmd.arg("devices");
    match xdg {
        Some(v) => cmd.env("XDG_RUNTIME_DIR", v),
        None => cmd.env_remove("XDG_RUNTIME_DIR"),
    };
    let out = cmd.output().expect("run spinr devices");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "spinr devices failed: {stderr}");
    stderr
}

#[test]
fn no_xdg_runtime_dir_message_without_a_session() {
    let stderr = devices_stderr(None);
    assert!(!stderr.contains("XDG_RUNTIME_DIR"), "stderr: {stderr}");
}

#[test]
fn no_xdg_runtime_dir_message_when_it_is_not_a_directory() {
    let stderr = devices_stderr(Some("/nonexistent/spinr-test-runtime"));
    assert!(!stderr.contains("XDG_RUNTIME_DIR"), "stderr: {stderr}");
}
