//! Claim 7's measurement for `compare`: `docker run` by the CLI, the client's start-up alone and the
//! same container through the Engine API, one of each per round (interleaved, so drift and load hit
//! all three alike), after discarded warm-up rounds; gathered into the report crate's
//! [`DockerSplit`].

use std::time::Duration;

use boxbench_core::interrupt;
use boxbench_core::measure::launch_once;
use boxbench_core::{InstanceSpec, Launcher, Workload};
use boxbench_peers::{DockerLauncher, DockerOptions};
use boxbench_report::docker_split::{DockerSplit, EngineServer};
use boxbench_report::{Series, VmKind};

use crate::compare::CompareProgress;

/// How the split is measured.
#[derive(Debug, Clone)]
pub struct SplitSettings {
    /// Measured rounds.
    pub runs: usize,
    /// Rounds discarded first.
    pub warmup: usize,
    /// Each launch's deadline.
    pub timeout: Duration,
    /// Start a private dockerd when none answers.
    pub start_dockerd: bool,
    /// The daemon to use (default: the system socket).
    pub docker_host: Option<String>,
    /// The container images (the root filesystem the image is imported from).
    pub images: boxbench_core::spec::ImagePaths,
}

/// The launches of one round, in order: the CLI, the CLI through a tap on the socket, the client's
/// start-up, the Engine API.
pub const LAUNCHES_PER_ROUND: usize = 4;

/// Measures the split; an error is one line saying what could not be set up.
pub fn measure(settings: &SplitSettings, progress: &dyn CompareProgress) -> Result<DockerSplit, String> {
    let cli = DockerLauncher::new(DockerOptions {
        start_dockerd: settings.start_dockerd,
        host: settings.docker_host.clone(),
        ..DockerOptions::default()
    })
    .map_err(|e| e.to_string())?;
    let api = cli.api_launcher().map_err(|e| e.to_string())?;
    let client = cli.client_launcher();
    let tapped = cli.tapped_launcher().map_err(|e| e.to_string())?;
    let mut spec = InstanceSpec::new(Workload::Hello, settings.images.clone());
    spec.timeout = settings.timeout;
    let launchers: [&dyn Launcher; LAUNCHES_PER_ROUND] = [&cli, &tapped, &client, &api];
    let mut records: [Vec<boxbench_core::Record>; LAUNCHES_PER_ROUND] = Default::default();
    for round in 0..settings.warmup + settings.runs {
        if interrupt::requested() {
            break;
        }
        for (launcher, kept) in launchers.iter().zip(records.iter_mut()) {
            let record = launch_once(*launcher, &spec).map_err(|e| format!("{}: {e}", launcher.name()))?;
            progress.launched(launcher.name(), &record);
            if round >= settings.warmup {
                kept.push(record);
            }
        }
    }
    let [cli_records, tapped_records, client_records, api_records] = records;
    let series = |name: &str, records| Series::new(name.to_owned(), "hello".to_owned(), None::<VmKind>, records);
    let server = api.server();
    Ok(DockerSplit {
        client_version: cli.tool().version.clone(),
        server: EngineServer {
            version: server.version.clone(),
            api_version: server.api_version.clone(),
            min_api_version: server.min_api_version.clone(),
            go_version: server.go_version.clone(),
            os_arch: format!("{}/{}", server.os, server.arch),
        },
        api_version: api.api_version().to_owned(),
        socket: api.socket().display().to_string(),
        private_daemon: cli.started_daemon(),
        cli: series(cli.name(), cli_records).with_command("boxbench run --backend docker --workload hello"),
        client_startup: series(client.name(), client_records).with_command("docker --version"),
        api: series(api.name(), api_records)
            .with_command("boxbench compare --backend docker (claim 7's Engine API series)"),
        calibration: None,
        tapped: Some(
            series(tapped.name(), tapped_records)
                .with_command("boxbench compare --backend docker (claim 7's CLI through a tap on the socket)"),
        ),
    })
}
