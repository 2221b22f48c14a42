//! Secret files (keys, tokens) readable only by their owner, written so a
//! reader never sees half a file: into a temporary file in the same
//! directory (mode 0600, synced), then published by a rename or, when the
//! file must be created exactly once by racing processes, a link that fails
//! if the file exists.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Writes a secret file readable only by its owner, atomically (the file's
/// contents are synced before the rename); replaces an existing file.
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let tmp = write_temporary(path, contents)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Creates a secret file only if `path` does not exist yet, durably (the
/// directory is synced too). Of several processes or threads racing to
/// create it, exactly one succeeds; the others get
/// [`std::io::ErrorKind::AlreadyExists`] and the winner's file is complete.
pub fn create_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let tmp = write_temporary(path, contents)?;
    // A hard link never replaces its target, unlike a rename.
    let linked = std::fs::hard_link(&tmp, path);
    let removed = std::fs::remove_file(&tmp);
    linked?;
    removed?;
    sync_dir(path)
}

/// Syncs the directory holding `path`, so a crash cannot lose a rename or
/// link into it.
fn sync_dir(path: &Path) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    std::fs::File::open(dir)?.sync_all()
}

/// A new synced 0600 file next to `path`, named uniquely per process and
/// call, holding `contents`.
fn write_temporary(path: &Path, contents: &[u8]) -> std::io::Result<PathBuf> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let call = NEXT.fetch_add(1, Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp.{}.{call}", std::process::id()));
    // Only a crashed earlier process with the same pid can have left one.
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp)?;
    let written = file.write_all(contents).and_then(|()| file.sync_all());
    if let Err(err) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(err);
    }
    Ok(tmp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_private_creates_once_and_leaves_no_temporary_file() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("secret");
        create_private(&path, b"first")?;
        let again = create_private(&path, b"second");
        assert_eq!(
            again.err().map(|err| err.kind()),
            Some(std::io::ErrorKind::AlreadyExists)
        );
        assert_eq!(std::fs::read(&path)?, b"first");
        write_private(&path, b"third")?;
        assert_eq!(std::fs::read(&path)?, b"third");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path)?.permissions().mode() & 0o777,
                0o600
            );
        }
        let names: Vec<_> = std::fs::read_dir(dir.path())?
            .map(|entry| entry.map(|entry| entry.file_name()))
            .collect::<Result<_, _>>()?;
        assert_eq!(names, vec![std::ffi::OsString::from("secret")]);
        Ok(())
    }
}
