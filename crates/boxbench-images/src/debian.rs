//! Debian packages the images are made of (busybox-static, the cloud kernel): which version apt
//! would pick, downloading its `.deb` once into a cache directory, and unpacking it with `dpkg -x`.
//!
//! apt's answers (a candidate version, a dependency) are remembered in the cache directory until
//! apt's package lists change (`apt-get update`): without a binary package cache, every `apt-cache`
//! call re-reads the lists, which costs seconds, and an up-to-date build should not.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

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

/// Where apt keeps its package lists.
const APT_LISTS: &str = "/var/lib/apt/lists";

/// When apt's package lists last changed (`None` when there are none).
fn lists_changed_at() -> Option<SystemTime> {
    fs::read_dir(APT_LISTS)
        .ok()?
        .filter_map(|e| e.ok()?.metadata().ok())
        .filter(|m| m.is_file())
        .filter_map(|m| m.modified().ok())
        .max()
}

/// The answer of `query`, remembered in `cache_dir/.apt-KEY` while apt's lists stay as they were.
/// Only answers (`Some`) are remembered.
fn remembered<E>(
    cache_dir: &Path,
    key: &str,
    query: impl FnOnce() -> Result<Option<String>, E>,
) -> Result<Option<String>, E> {
    let record = cache_dir.join(format!(".apt-{key}"));
    let recorded_at = fs::metadata(&record).and_then(|m| m.modified()).ok();
    // Without package lists apt cannot answer at all (a host that only runs boxbench, such as an
    // svm-host L1): the recorded answer stands.
    let fresh = match (recorded_at, lists_changed_at()) {
        (Some(recorded), Some(lists)) => recorded >= lists,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if fresh {
        let recorded = fs::read_to_string(&record).map(|s| s.trim().to_owned()).unwrap_or_default();
        if !recorded.is_empty() {
            return Ok(Some(recorded));
        }
    }
    let answer = query()?;
    if let Some(answer) = &answer {
        // Losing the record only costs the next build an apt-cache call.
        let _ = crate::write_atomically(&record, format!("{answer}\n").as_bytes());
    }
    Ok(answer)
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
    let Some(version) = remembered(cache_dir, &format!("candidate-{package}"), || candidate_version(package))? else {
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

/// The first package `package` depends on whose name starts with `prefix` (`apt-cache depends`),
/// remembered in `cache_dir`.
pub(crate) fn dependency_with_prefix(package: &str, prefix: &str, cache_dir: &Path) -> Result<String, DebianError> {
    fs::create_dir_all(cache_dir).map_err(io_err(cache_dir))?;
    let query = || -> Result<Option<String>, DebianError> {
        let depends = run("apt-cache", &["depends", package], None)?;
        Ok(depends
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Depends:"))
            .map(str::trim)
            .find(|dep| dep.starts_with(prefix))
            .map(str::to_owned))
    };
    remembered(cache_dir, &format!("depends-{package}-{prefix}"), query)?
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
    fn answers_are_remembered_until_the_lists_change() {
        boxbench_testkit::require!(
            lists_changed_at().is_some(),
            "no apt package lists in {APT_LISTS} (apt-get update makes them)"
        );
        let dir = tempfile::tempdir().unwrap();
        let first = remembered(dir.path(), "k", || Ok::<_, ()>(Some("1.0".to_owned()))).unwrap();
        assert_eq!(first.as_deref(), Some("1.0"));
        let second = remembered(dir.path(), "k", || -> Result<Option<String>, ()> { panic!("asked apt again") });
        assert_eq!(second.unwrap().as_deref(), Some("1.0"));
        // A record older than the lists is asked again.
        let record = fs::File::options().write(true).open(dir.path().join(".apt-k")).unwrap();
        record.set_modified(SystemTime::UNIX_EPOCH).unwrap();
        let third = remembered(dir.path(), "k", || Ok::<_, ()>(Some("2.0".to_owned()))).unwrap();
        assert_eq!(third.as_deref(), Some("2.0"));
        // No answer is not remembered.
        assert_eq!(remembered(dir.path(), "none", || Ok::<_, ()>(None)).unwrap(), None);
        assert!(!dir.path().join(".apt-none").exists());
    }

    #[test]
    fn unknown_package_without_cache_says_run_apt_get_update() {
        let dir = tempfile::tempdir().unwrap();
        let err = fetch_deb("boxbench-no-such-package", dir.path(), || {}).unwrap_err();
        assert!(err.to_string().contains("run apt-get update"), "{err}");
    }
}
