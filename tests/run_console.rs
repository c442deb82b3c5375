//! `boxbench run` through the real binary prints, in text mode, what the last launch printed after the
//! phase table when a command is given (or one launch is made), and leaves it out with `--quiet`.

use std::process::{Command, Output};

use boxbench_testkit::{is_root, require};

const BOXBENCH: &str = env!("CARGO_BIN_EXE_boxbench");

fn boxbench(args: &[&str]) -> (Output, String) {
    let output = Command::new(BOXBENCH).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "boxbench {} failed:\n{stdout}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    (output, stdout)
}

#[test]
fn a_commands_output_follows_the_table_unless_quiet() {
    require!(is_root(), "the container backend needs root");
    let (_, stdout) = boxbench(&["run", "-b", "container", "--", "echo", "hello-from-cmd"]);
    let table_end = stdout.find("host: ").unwrap_or_else(|| panic!("no table:\n{stdout}"));
    let heading = stdout.find("console of the last launch:\n").unwrap_or_else(|| panic!("no console:\n{stdout}"));
    assert!(heading > table_end, "the console comes after the table:\n{stdout}");
    assert!(stdout.ends_with("console of the last launch:\nhello-from-cmd\n"), "{stdout}");

    let (_, quiet) = boxbench(&["run", "-b", "container", "--quiet", "--", "echo", "hello-from-cmd"]);
    assert!(quiet.contains("phase") && quiet.contains("host: "), "the table stays:\n{quiet}");
    // (The title line names the command; its output is a line of its own.)
    assert!(!quiet.lines().any(|l| l == "hello-from-cmd") && !quiet.contains("console of"), "{quiet}");

    // Several launches of a named workload: the table alone; of a command: its last console too.
    let (_, many) = boxbench(&["run", "-b", "container", "-n", "2"]);
    assert!(!many.contains("console of the last launch"), "{many}");
    let (_, many_cmd) = boxbench(&["run", "-b", "container", "-n", "2", "--", "echo", "again"]);
    assert!(many_cmd.ends_with("console of the last launch:\nagain\n"), "{many_cmd}");
    // JSON is unchanged: the console is in each record.
    let (_, json) = boxbench(&["run", "-b", "container", "--json", "--", "echo", "hello-from-cmd"]);
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(doc["runs"][0]["console"], "hello-from-cmd\n");
}
