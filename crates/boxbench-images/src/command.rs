//! Host tools the builder runs (`apt-get`, `apt-cache`, `dpkg`, the extracted busybox): one place
//! that runs them and turns a failure into an error naming the command and what it printed.

use std::path::Path;
use std::process::Command;

/// A host tool that could not be run or failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The program could not be started (not installed, not executable).
    #[error("cannot run `{command}`: {source}")]
    Spawn { command: String, source: std::io::Error },
    /// The program ran and failed; `stderr` is the last of what it printed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed { command: String, status: std::process::ExitStatus, stderr: String },
}

/// Runs `program args...` (in `cwd` if given) and returns its standard output as text.
pub(crate) fn run(program: &str, args: &[&str], cwd: Option<&Path>) -> Result<String, CommandError> {
    let command_line = std::iter::once(program).chain(args.iter().copied()).collect::<Vec<_>>().join(" ");
    let mut command = Command::new(program);
    command.args(args).env("LC_ALL", "C");
    if let Some(dir) = cwd {
        command.current_dir(dir);
    }
    let output = command.output().map_err(|source| CommandError::Spawn { command: command_line.clone(), source })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = tail[tail.len().saturating_sub(3)..].join(" / ");
        return Err(CommandError::Failed { command: command_line, status: output.status, stderr: tail });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_of_a_successful_command_is_returned() {
        assert_eq!(run("sh", &["-c", "echo hi"], None).unwrap(), "hi\n");
    }

    #[test]
    fn failure_names_the_command_and_its_stderr() {
        let err = run("sh", &["-c", "echo oops >&2; exit 3"], None).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("sh -c"), "{text}");
        assert!(text.contains("oops"), "{text}");
        let missing = run("/nonexistent/tool", &[], None).unwrap_err();
        assert!(missing.to_string().contains("/nonexistent/tool"));
    }
}
