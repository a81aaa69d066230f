use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // Before anything can start a thread or probe a GPU adapter.
    ensure_runtime_dir();
    let cli = spinr::cli::Cli::parse();
    // The command runs on a worker of rayon's pool, not on the main thread: a parallel pass
    // started from outside the pool is handed over to a worker and the caller put to sleep
    // until it ends, and a minibatch fit starts thousands of short passes. From a worker they
    // split in place. Same partitions, same bits; 0.77× the wall time of a chelsea 128² fit,
    // 0.97× at 256² (README, "Benchmarks"). Workers get the main thread's usual 8 MiB stack.
    let _ = rayon::ThreadPoolBuilder::new()
        .stack_size(8 << 20)
        .build_global();
    match rayon::scope(|_| spinr::cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(spinr::cli::exit_code(&e))
        }
    }
}

/// On a headless machine (no login session) `XDG_RUNTIME_DIR` is unset, and the Wayland client
/// library that the Vulkan and GL drivers load prints `error: XDG_RUNTIME_DIR is invalid or not
/// set in the environment.` while spinr probes adapters. Point it at a private per-user folder
/// (mode 0700, as the XDG spec asks) so every run starts quietly. Failing that, leave it: the
/// message is harmless.
#[cfg(unix)]
fn ensure_runtime_dir() {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    if std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|d| std::path::Path::new(&d).is_dir()) {
        return;
    }
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    let dir = std::env::temp_dir().join(format!("spinr-runtime-{uid}"));
    let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
    // The temp dir is shared: use the folder only if it is ours, private and not a symlink
    // someone else planted.
    let ok = std::fs::symlink_metadata(&dir)
        .is_ok_and(|m| m.is_dir() && m.uid() == uid && m.permissions().mode() & 0o077 == 0);
    if ok {
        // Single-threaded here, so changing the environment is sound.
        std::env::set_var("XDG_RUNTIME_DIR", &dir);
    }
}

#[cfg(not(unix))]
fn ensure_runtime_dir() {}
