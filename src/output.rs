//! Atomic file output: every result file is written to a temporary file in its destination
//! directory, flushed to disk, then renamed over the destination. A reader (or a crash, or
//! Ctrl-C) therefore sees the old file or the complete new one, never a partial one.

use crate::error::{Error, Result};
use std::io::{self, Write};
use std::path::Path;

/// Writes `path` atomically with the bytes `write` produces. If `write` fails (or panics), the
/// temporary file is removed and `path` is untouched.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<()> {
    let io_err = |e: io::Error| Error::Io {
        path: path.to_path_buf(),
        msg: format!("cannot write: {e}"),
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Same directory as the destination, so the rename never crosses file systems.
    let prefix = format!(".{name}.");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    // A result file gets the permissions a plain `File::create` would give it (0666 less the
    // umask), not the temporary file's private 0600; a file being replaced keeps its own.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let tmp = builder.tempfile_in(dir).map_err(io_err)?;
    if let Ok(meta) = std::fs::metadata(path) {
        tmp.as_file()
            .set_permissions(meta.permissions())
            .map_err(io_err)?;
    }
    {
        let mut out = io::BufWriter::new(tmp.as_file());
        write(&mut out).map_err(io_err)?;
        out.flush().map_err(io_err)?;
    }
    tmp.as_file().sync_all().map_err(io_err)?;
    tmp.persist(path).map_err(|e| io_err(e.error))?;
    // Make the rename itself durable; not every platform lets a directory be opened for this.
    #[cfg(unix)]
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Writes a byte buffer atomically.
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, |w| w.write_all(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[cfg(unix)]
    #[test]
    fn results_are_as_readable_as_a_plain_create_and_replacements_keep_their_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let plain = dir.path().join("plain");
        std::fs::File::create(&plain).unwrap();
        let p = dir.path().join("report.json");
        write_bytes(&p, b"{}").unwrap();
        assert_eq!(
            mode(&p),
            mode(&plain),
            "a new result file, as File::create makes it"
        );
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_bytes(&p, b"{ }").unwrap();
        assert_eq!(mode(&p), 0o640, "a replaced file keeps its mode");
    }

    #[test]
    fn replaces_the_file_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.bin");
        write_bytes(&p, b"old contents").unwrap();
        write_bytes(&p, b"new").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        assert_eq!(entries(dir.path()), vec!["a.bin"]);
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("model.safetensors");
        write_bytes(&p, b"complete old model").unwrap();
        let r = write_atomic(&p, |w| {
            w.write_all(&[7u8; 100_000])?; // past the BufWriter's buffer: really on disk
            Err(io::Error::other("disk full"))
        });
        let msg = r.unwrap_err().to_string();
        assert!(
            msg.contains("model.safetensors") && msg.contains("disk full"),
            "{msg}"
        );
        assert_eq!(std::fs::read(&p).unwrap(), b"complete old model");
        assert_eq!(entries(dir.path()), vec!["model.safetensors"]);
    }

    #[test]
    fn a_failed_first_write_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("report.json");
        let r = write_atomic(&p, |w| {
            w.write_all(b"{\"psnr\":")?;
            Err(io::Error::other("interrupted"))
        });
        assert!(r.is_err());
        assert!(entries(dir.path()).is_empty());
    }

    #[test]
    fn a_panic_mid_write_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("reconstruction.png");
        write_bytes(&p, b"old").unwrap();
        let path = p.clone();
        let caught = std::panic::catch_unwind(move || {
            let _ = write_atomic(&path, |w| {
                w.write_all(&[1u8; 70_000])?;
                panic!("killed mid-write");
            });
        });
        assert!(caught.is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert_eq!(entries(dir.path()), vec!["reconstruction.png"]);
    }

    #[test]
    fn a_missing_directory_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("no/such/dir/x.png");
        let msg = write_bytes(&p, b"x").unwrap_err().to_string();
        assert!(msg.contains("x.png"), "{msg}");
        assert!(!p.exists());
    }
}
