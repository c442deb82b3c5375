//! Where reports go when the user names no directory: `$BOXBENCH_REPORTS_DIR` (set inside an svm-host
//! L1 to the directory that comes back to the host), else the `reports/` of the boxbench checkout
//! found at run time, else `reports/` in the current directory.

use std::path::PathBuf;

use boxbench_svmhost::init::REPORTS_DIR_ENV;

use crate::compare::timestamp;

/// The directory reports go to by default.
pub fn reports_dir() -> PathBuf {
    std::env::var_os(REPORTS_DIR_ENV)
        .map(PathBuf::from)
        .or_else(|| boxbench_images::checkout_root().map(|root| root.join("reports")))
        .unwrap_or_else(|| PathBuf::from("reports"))
}

/// `reports_dir()/PREFIX-<UTC timestamp>`, or `reports_dir()/<UTC timestamp>` without a prefix.
pub fn timestamped(prefix: &str) -> PathBuf {
    let name = if prefix.is_empty() { timestamp() } else { format!("{prefix}-{}", timestamp()) };
    reports_dir().join(name)
}
