//! Code-base rules that rot without a test: every source file opens with a
//! `//!` doc saying why it exists, and stays small enough to read.

use std::path::{Path, PathBuf};

const MAX_LINES: usize = 600;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            rust_files(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

fn sources() -> std::io::Result<Vec<PathBuf>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "simulation/src", "simulation/tests", "tests"] {
        rust_files(&root.join(dir), &mut files)?;
    }
    files.push(root.join("build.rs"));
    files.sort();
    Ok(files)
}

#[test]
fn every_source_file_has_a_module_doc() -> std::io::Result<()> {
    let mut missing = Vec::new();
    for file in sources()? {
        let text = std::fs::read_to_string(&file)?;
        let first = text
            .lines()
            .find(|line| !line.trim().is_empty())
            .unwrap_or_default();
        if !first.starts_with("//!") {
            missing.push(file.display().to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "files without a `//!` module doc: {missing:#?}"
    );
    Ok(())
}

#[test]
fn source_files_stay_small() -> std::io::Result<()> {
    let mut long = Vec::new();
    for file in sources()? {
        let lines = std::fs::read_to_string(&file)?.lines().count();
        if lines > MAX_LINES {
            long.push(format!("{} ({lines} lines)", file.display()));
        }
    }
    assert!(
        long.is_empty(),
        "split these files (over {MAX_LINES} lines): {long:#?}"
    );
    Ok(())
}
