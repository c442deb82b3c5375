//! Prints what `boxbench_peers::probe_all` finds on this host, one backend per line (what
//! `boxbench doctor` reports about the peer tools).

fn main() {
    for status in boxbench_peers::probe_all() {
        println!(
            "{:13} {:5} {:28} {:18} {}",
            status.name,
            if status.usable { "ok" } else { "NO" },
            status.binary.as_ref().map_or_else(|| "-".to_owned(), |p| p.display().to_string()),
            status.version.as_deref().unwrap_or("-"),
            status.detail.as_deref().unwrap_or("")
        );
    }
}
