//! Finding a peer tool's binary and its version: a `which`-like search of `PATH` and the parsing of
//! `--version` output, so every backend names what it ran and says which Debian package provides a
//! missing tool.

use std::env;
use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A tool that could not be found or asked for its version.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// No executable of that name on `PATH`; `install` says how to get it.
    #[error("{name} not found on PATH ({install})")]
    NotFound { name: String, install: String },
    /// A path given explicitly is not an executable file.
    #[error("{path} is not an executable file")]
    NotExecutable { path: PathBuf },
    /// Running `TOOL --version` failed.
    #[error("{path} --version: {source}")]
    VersionFailed { path: PathBuf, source: std::io::Error },
    /// `TOOL --version` printed nothing that looks like a version.
    #[error("{path} --version printed no version number")]
    NoVersion { path: PathBuf },
}

/// A tool found on this host: where it is and what version it says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tool {
    /// The name it is known by (`crun`).
    pub name: String,
    /// The executable.
    pub path: PathBuf,
    /// The version number its `--version` printed (`1.8.1`).
    pub version: String,
}

impl Tool {
    /// Finds `name` on `PATH` and asks it for its version; the error names the Debian `package` when
    /// missing.
    pub fn find(name: &str, package: &str) -> Result<Self, ToolError> {
        Self::find_or(name, &format!("Debian package: {package}"))
    }

    /// Finds `name` on `PATH`; the error says `install` (how to get it) when missing.
    pub fn find_or(name: &str, install: &str) -> Result<Self, ToolError> {
        let path = find_on_path(name)
            .ok_or_else(|| ToolError::NotFound { name: name.to_owned(), install: install.to_owned() })?;
        Self::at(name, &path)
    }

    /// Uses the executable at `path` as the tool `name`.
    pub fn at(name: &str, path: &Path) -> Result<Self, ToolError> {
        if !is_executable(path) {
            return Err(ToolError::NotExecutable { path: path.to_owned() });
        }
        let version = version_of(path)?;
        Ok(Self { name: name.to_owned(), path: path.to_owned(), version })
    }

    /// `name version`, as notes print it.
    pub fn label(&self) -> String {
        format!("{} {}", self.name, self.version)
    }
}

/// The first executable called `name` in the directories of `PATH`.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    find_in(name, &path)
}

fn find_in(name: &str, search_path: &OsStr) -> Option<PathBuf> {
    env::split_paths(search_path).map(|dir| dir.join(name)).find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    path.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Runs `path --version` and extracts the version number from what it printed.
pub fn version_of(path: &Path) -> Result<String, ToolError> {
    let output = Command::new(path)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|source| ToolError::VersionFailed { path: path.to_owned(), source })?;
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    parse_version(&text).ok_or_else(|| ToolError::NoVersion { path: path.to_owned() })
}

/// The first word of `text` that starts with a digit and has a dot (`1.8.1`, `7.2.22`,
/// `20.10.24+dfsg1,`), trimmed of a trailing comma and of parentheses; tools print it after different
/// words (`crun version 1.8.1`, `QEMU emulator version 7.2.22 (Debian ...)`, `Firecracker v1.7.0`,
/// `systemd 252 (252.39-1~deb12u2)`).
pub fn parse_version(text: &str) -> Option<String> {
    text.split_whitespace()
        .map(|word| word.trim_end_matches(',').trim_start_matches('(').trim_end_matches(')').trim_start_matches('v'))
        .find(|word| word.starts_with(|c: char| c.is_ascii_digit()) && word.contains('.'))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_of_the_tools_as_they_print_them() {
        assert_eq!(parse_version("crun version 1.8.1\ncommit: f8a0\nspec: 1.0.0\n").as_deref(), Some("1.8.1"));
        assert_eq!(parse_version("runc version 1.1.5+ds1\ncommit: x\nspec: 1.0.2-dev\n").as_deref(), Some("1.1.5+ds1"));
        assert_eq!(parse_version("podman version 4.3.1\n").as_deref(), Some("4.3.1"));
        assert_eq!(parse_version("Docker version 20.10.24+dfsg1, build 297e128\n").as_deref(), Some("20.10.24+dfsg1"));
        assert_eq!(
            parse_version("QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\n").as_deref(),
            Some("7.2.22")
        );
        assert_eq!(parse_version("Firecracker v1.7.0\n\n").as_deref(), Some("1.7.0"));
        assert_eq!(parse_version("systemd 252 (252.39-1~deb12u2)\n+PAM\n").as_deref(), Some("252.39-1~deb12u2"));
        assert_eq!(parse_version("5.0.2\n").as_deref(), Some("5.0.2"));
        assert_eq!(parse_version("usage: tool [options]\n"), None);
    }

    #[test]
    fn path_search_finds_executables_only() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "not executable").unwrap();
        let exe = dir.path().join("exe");
        std::fs::write(&exe, "#!/bin/sh\necho exe version 2.5\n").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let search = env::join_paths([Path::new("/nonexistent"), dir.path()]).unwrap();
        assert_eq!(find_in("exe", &search), Some(exe.clone()));
        assert_eq!(find_in("plain", &search), None);
        assert_eq!(Tool::at("exe", &exe).unwrap().version, "2.5");
        assert!(matches!(Tool::at("plain", &plain), Err(ToolError::NotExecutable { .. })));
    }

    #[test]
    fn missing_tool_names_its_package() {
        let err = Tool::find("boxbench-no-such-tool", "boxbench-pkg").unwrap_err();
        assert_eq!(err.to_string(), "boxbench-no-such-tool not found on PATH (Debian package: boxbench-pkg)");
    }
}
