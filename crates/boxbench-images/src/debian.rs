//! Debian packages the images are made of (busybox-static, the cloud kernel): which version apt
//! would pick, downloading its `.deb` once into a cache directory, and unpacking it with `dpkg -x`.

use std::fs;
use std::path::{Path, PathBuf};

use crate::command::{CommandError, run};
use crate::lock::{DirLock, LockError};

/// A package that could not be resolved, downloaded or unpacked.
#[derive(Debug, thiserror::Error)]
pub enum DebianError {
    /// apt knows no installable version and none was cached before.
    #[error("apt has no candidate for package {package} and {cache} holds no copy (run apt-get update)")]
    NoCandidate { package: String, cache: PathBuf },
    /// `apt-get download` failed.
    #[error("downloading {package} failed (run apt-get update if the package lists are missing): {source}")]
    Download { package: String, source: CommandError },
    /// A metapackage names no real package it depends on.
    #[error("{package} depends on no {prefix}* package (apt-cache depends; run apt-get update?)")]
    NoDependency { package: String, prefix: String },
    /// `apt-cache` or `dpkg -x` failed.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// The cache directory could not be used.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// The cache lock failed.
    #[error(transparent)]
    Lock(#[from] LockError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DebianError + '_ {
    move |source| DebianError::Io { path: path.to_owned(), source }
}

/// The version of `package` apt would install, or `None` when apt has none (lists missing).
fn candidate_version(package: &str) -> Result<Option<String>, CommandError> {
    let policy = run("apt-cache", &["policy", package], None)?;
    Ok(policy
        .lines()
        .find_map(|l| l.trim().strip_prefix("Candidate:"))
        .map(str::trim)
        .filter(|v| !v.is_empty() && *v != "(none)")
        .map(str::to_owned))
}

/// The `.deb` files of `package` in `dir` whose version part is `version` (any if `None`), sorted.
fn cached_debs(dir: &Path, package: &str, version: Option<&str>) -> Result<Vec<PathBuf>, DebianError> {
    // apt names downloads PACKAGE_VERSION_ARCH.deb with the epoch colon escaped as %3a.
    let prefix = match version {
        Some(v) => format!("{package}_{}_", v.replace(':', "%3a")),
        None => format!("{package}_"),
    };
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(io_err(dir))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
        })
        .collect();
    found.sort();
    Ok(found)
}

/// The `.deb` of `package` in `cache_dir`, downloaded with `apt-get download` (after calling
/// `on_download`) unless the version apt would pick is cached already. Without package lists, a
/// previously cached copy is used.
pub(crate) fn fetch_deb(package: &str, cache_dir: &Path, on_download: impl FnOnce()) -> Result<PathBuf, DebianError> {
    fs::create_dir_all(cache_dir).map_err(io_err(cache_dir))?;
    let _lock = DirLock::acquire(&cache_dir.join(".lock"), || {})?;
    let Some(version) = candidate_version(package)? else {
        return cached_debs(cache_dir, package, None)?
            .pop()
            .ok_or_else(|| DebianError::NoCandidate { package: package.to_owned(), cache: cache_dir.to_owned() });
    };
    if let Some(deb) = cached_debs(cache_dir, package, Some(&version))?.pop() {
        return Ok(deb);
    }
    // Download into a private directory and move the finished file in, so an interrupted download
    // never leaves a truncated .deb under its final name.
    on_download();
    let staging = cache_dir.join(format!(".download-{}", std::process::id()));
    fs::create_dir_all(&staging).map_err(io_err(&staging))?;
    let downloaded = run("apt-get", &["download", "-q", package], Some(&staging))
        .map_err(|source| DebianError::Download { package: package.to_owned(), source })
        .and_then(|_| cached_debs(&staging, package, Some(&version)));
    let result = downloaded.and_then(|debs| {
        let deb = debs.into_iter().next().ok_or_else(|| DebianError::Io {
            path: staging.clone(),
            source: std::io::Error::other(format!("apt-get download left no {package} {version} .deb")),
        })?;
        let name = deb.file_name().map(ToOwned::to_owned).unwrap_or_default();
        let dest = cache_dir.join(name);
        fs::rename(&deb, &dest).map_err(io_err(&dest))?;
        Ok(dest)
    });
    let _ = fs::remove_dir_all(&staging);
    result
}

/// The first package `package` depends on whose name starts with `prefix` (`apt-cache depends`).
pub(crate) fn dependency_with_prefix(package: &str, prefix: &str) -> Result<String, DebianError> {
    let depends = run("apt-cache", &["depends", package], None)?;
    depends
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|dep| dep.starts_with(prefix))
        .map(str::to_owned)
        .ok_or_else(|| DebianError::NoDependency { package: package.to_owned(), prefix: prefix.to_owned() })
}

/// Unpacks `deb` into `dest` (`dpkg -x`).
pub(crate) fn extract(deb: &Path, dest: &Path) -> Result<(), DebianError> {
    fs::create_dir_all(dest).map_err(io_err(dest))?;
    let deb_arg = deb.to_string_lossy();
    let dest_arg = dest.to_string_lossy();
    run("dpkg", &["-x", &deb_arg, &dest_arg], None)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_debs_match_the_escaped_epoch() {
        let dir = tempfile::tempdir().unwrap();
        for name in
            ["busybox-static_1%3a1.35.0-4_amd64.deb", "busybox-static_1%3a1.30_amd64.deb", "busybox_1_amd64.deb"]
        {
            fs::write(dir.path().join(name), b"").unwrap();
        }
        let exact = cached_debs(dir.path(), "busybox-static", Some("1:1.35.0-4")).unwrap();
        assert_eq!(exact, vec![dir.path().join("busybox-static_1%3a1.35.0-4_amd64.deb")]);
        assert_eq!(cached_debs(dir.path(), "busybox-static", None).unwrap().len(), 2);
        assert!(cached_debs(dir.path(), "busybox-static", Some("2:0")).unwrap().is_empty());
    }

    #[test]
    fn unknown_package_without_cache_says_run_apt_get_update() {
        let dir = tempfile::tempdir().unwrap();
        let err = fetch_deb("boxbench-no-such-package", dir.path(), || {}).unwrap_err();
        assert!(err.to_string().contains("run apt-get update"), "{err}");
    }
}
