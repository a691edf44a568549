//! Outputs checked before the work and written all or nothing: a command validates every path
//! it will write (extension, folder, writability) before it computes anything, and a failed
//! write leaves none of the command's other outputs behind.
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// What a path will hold, which decides the extensions it may have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// .npy, .nii or .nii.gz
    Volume,
    /// .npy
    Npy,
    /// .png
    Png,
    /// .json
    Json,
    /// .safetensors
    SafeTensors,
    /// .md
    Markdown,
}

impl Kind {
    fn extensions(self) -> &'static [&'static str] {
        match self {
            Kind::Volume => &[".npy", ".nii", ".nii.gz"],
            Kind::Npy => &[".npy"],
            Kind::Png => &[".png"],
            Kind::Json => &[".json"],
            Kind::SafeTensors => &[".safetensors"],
            Kind::Markdown => &[".md"],
        }
    }
}

fn fail(path: &Path, msg: String) -> Error {
    Error::io(path, std::io::Error::other(msg))
}

/// Checks that `path` can be written as `kind`: its extension, that it is not a folder, and that
/// its folder exists and takes a new file (a probe file is created there and removed).
pub fn check(path: &Path, kind: Kind) -> Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let exts = kind.extensions();
    if !exts.iter().any(|e| name.len() > e.len() && name.ends_with(e)) {
        return Err(fail(path, format!("output must end in {}", exts.join(", "))));
    }
    if path.is_dir() {
        return Err(fail(path, "is a folder, not a file name".into()));
    }
    let dir = super::folder_of(path);
    if !dir.is_dir() {
        return Err(fail(path, format!("the folder {} does not exist", dir.display())));
    }
    let probe = dir.join(format!(".{name}.probe{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|e| fail(path, format!("cannot write in {}: {e}", dir.display())))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Checks each (path, kind) whose path is given.
pub fn check_all(outputs: &[(Option<&Path>, Kind)]) -> Result<()> {
    outputs.iter().filter_map(|(p, k)| p.map(|p| (p, *k))).try_for_each(|(p, k)| check(p, k))
}

/// Files written by one command: unless `commit` is called, dropping it removes them, so a
/// command that fails halfway leaves no partial set of outputs.
#[derive(Default)]
pub struct Outputs {
    written: Vec<PathBuf>,
    committed: bool,
}

impl Outputs {
    /// Runs `write` for `path` and remembers the file once it exists.
    pub fn write<E>(&mut self, path: &Path, write: impl FnOnce(&Path) -> std::result::Result<(), E>) -> std::result::Result<(), E> {
        write(path)?;
        self.written.push(path.to_path_buf());
        Ok(())
    }
    /// Keeps every file written.
    pub fn commit(mut self) {
        self.committed = true;
    }
}

impl Drop for Outputs {
    fn drop(&mut self) {
        if !self.committed {
            for p in &self.written {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}
