//! The canonical root filesystem tree: Debian's static busybox with a symlink per applet, the few
//! files of `/etc`, empty mount points, and the recipe files (`/init`, `/boxbench/workloads/*`)
//! checked in under `guest-images/rootfs/`. Containers run it as a directory; the initramfs, the tar
//! layer and the OCI image are archives of it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::command::{CommandError, run};
use crate::tree::{self, EntryKind, TreeError};

/// Recipe files the tree cannot do without.
pub const REQUIRED_RECIPES: [&str; 5] = [
    "init",
    "boxbench/workloads/hello",
    "boxbench/workloads/idle",
    "boxbench/workloads/uname",
    "boxbench/workloads/disk",
];

/// Directories every rootfs has, with their modes (mount points are left empty).
const DIRECTORIES: [(&str, u32); 13] = [
    ("bin", 0o755),
    ("sbin", 0o755),
    ("usr", 0o755),
    ("usr/bin", 0o755),
    ("usr/sbin", 0o755),
    ("etc", 0o755),
    ("proc", 0o555),
    ("sys", 0o555),
    ("dev", 0o755),
    ("tmp", 0o1777),
    ("run", 0o755),
    ("root", 0o700),
    ("boxbench", 0o755),
];

/// A rootfs that could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// A recipe file the image needs is not in the recipe directory.
    #[error("recipe {0} is missing")]
    MissingRecipe(PathBuf),
    /// A recipe could not be installed in the tree (e.g. it collides with a directory of the tree).
    #[error("recipe {recipe} cannot be installed in the rootfs: {source}")]
    Recipe { recipe: PathBuf, source: std::io::Error },
    /// A file of the tree could not be written.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// The recipe directory could not be read.
    #[error(transparent)]
    Recipes(#[from] TreeError),
    /// `busybox --list-full` failed.
    #[error(transparent)]
    Busybox(#[from] CommandError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RootfsError + '_ {
    move |source| RootfsError::Io { path: path.to_owned(), source }
}

fn set_mode(path: &Path, mode: u32) -> Result<(), RootfsError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err(path))
}

/// Checks that every file of [`REQUIRED_RECIPES`] is in `recipes`.
pub(crate) fn check_recipes(recipes: &Path) -> Result<(), RootfsError> {
    for name in REQUIRED_RECIPES {
        let path = recipes.join(name);
        if !path.is_file() {
            return Err(RootfsError::MissingRecipe(path));
        }
    }
    Ok(())
}

/// Builds the tree at `dest` (which must not exist) from the `busybox` binary and the `recipes`.
pub(crate) fn assemble(busybox: &Path, recipes: &Path, dest: &Path) -> Result<(), RootfsError> {
    check_recipes(recipes)?;
    fs::create_dir(dest).map_err(io_err(dest))?;
    set_mode(dest, 0o755)?;
    for (dir, mode) in DIRECTORIES {
        let path = dest.join(dir);
        fs::create_dir(&path).map_err(io_err(&path))?;
        set_mode(&path, mode)?;
    }

    let installed = dest.join("bin/busybox");
    fs::copy(busybox, &installed).map_err(io_err(&installed))?;
    set_mode(&installed, 0o755)?;
    // The applets this busybox was built with, as paths relative to / (`usr/bin/[`, `sbin/reboot`).
    let applets = run(&busybox.to_string_lossy(), &["--list-full"], None)?;
    for applet in applets.lines().map(str::trim).filter(|a| a.contains('/') && *a != "bin/busybox") {
        let link = dest.join(applet);
        if let Some(parent) = link.parent() {
            fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        std::os::unix::fs::symlink("/bin/busybox", &link).map_err(io_err(&link))?;
    }

    for entry in tree::walk(recipes)? {
        let recipe = recipes.join(&entry.path);
        install_recipe(&entry, &dest.join(&entry.path))
            .map_err(|source| RootfsError::Recipe { recipe: recipe.clone(), source })?;
    }
    Ok(())
}

/// Installs one recipe entry at `path` in the tree; a recipe file wins over an applet symlink.
fn install_recipe(entry: &tree::TreeEntry, path: &Path) -> std::io::Result<()> {
    if path.is_symlink() {
        fs::remove_file(path)?;
    }
    match &entry.kind {
        EntryKind::Dir if path.is_dir() => Ok(()),
        EntryKind::Dir => {
            fs::create_dir(path)?;
            fs::set_permissions(path, fs::Permissions::from_mode(0o755))
        }
        EntryKind::File { source, .. } => {
            fs::copy(source, path)?;
            let mode = if entry.mode & 0o111 != 0 { 0o755 } else { 0o644 };
            fs::set_permissions(path, fs::Permissions::from_mode(mode))
        }
        EntryKind::Symlink { target } => std::os::unix::fs::symlink(target, path),
        EntryKind::CharDevice { .. } => {
            Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "device nodes are not installed from recipes"))
        }
    }
}
