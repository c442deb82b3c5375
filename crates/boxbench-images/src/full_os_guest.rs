//! What the full-OS disk runs and how it boots as an installed VM: the workload service every boot
//! of the disk reaches (VM or system container), and the partitioned, boot-loader-carrying copy of
//! the disk (`bootable.raw`) that firmware boots the way it boots a VM someone installed.
//!
//! The workload service (`guest-images/full-os/`): `boxbench-workload.service`, ordered after
//! `multi-user.target`, runs `/boxbench/run-workload`, which runs the same workload scripts as every
//! other boxbench guest (`guest-images/rootfs/boxbench/workloads/`), prints the marker on the console,
//! systemd's boot timestamps, the exit-status line of [`boxbench_core::spec::EXIT_STATUS_PREFIX`],
//! and powers off. `getty.target` is masked: the console is the workload's, with no login prompt.
//!
//! The bootable disk is a DOS partition table with two partitions: a FAT16 `/boot` partition
//! ([`BOOT_PARTITION_BYTES`], marked active) carrying Debian's SYSLINUX (`syslinux --install` writes
//! its volume boot record and `ldlinux.sys` into the FAT image through mtools), the disk's kernel and
//! initramfs and `syslinux.cfg`; and the disk's ext4 root filesystem, byte for byte `disk.raw`. The
//! master boot record is SYSLINUX's `mbr.bin`, which chains to the active partition. Every step works
//! on plain files: no loop device, no mount, nothing to leak.

use std::fs;
use std::io::{self, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;

/// `boxbench-workload.service`, installed as `/etc/systemd/system/boxbench-workload.service`.
pub const WORKLOAD_UNIT: &str = include_str!("../../../guest-images/full-os/boxbench-workload.service");
/// `/boxbench/run-workload`, the service's program.
pub const RUN_WORKLOAD: &str = include_str!("../../../guest-images/full-os/run-workload");
/// The workload scripts, the same files as the busybox guest's.
pub const WORKLOADS: [(&str, &str); 3] = [
    ("hello", include_str!("../../../guest-images/rootfs/boxbench/workloads/hello")),
    ("idle", include_str!("../../../guest-images/rootfs/boxbench/workloads/idle")),
    ("uname", include_str!("../../../guest-images/rootfs/boxbench/workloads/uname")),
];

/// The unit's name inside the disk.
pub const WORKLOAD_UNIT_NAME: &str = "boxbench-workload.service";

/// The size of the FAT `/boot` partition: the cloud kernel and its initramfs (about 30 MB) twice over.
pub const BOOT_PARTITION_BYTES: u64 = 64 << 20;
/// Where the first partition starts (the usual 1 MiB alignment; the MBR is sector 0).
pub const FIRST_PARTITION_OFFSET: u64 = 1 << 20;
/// The disk sector size of the partition table.
const SECTOR: u64 = 512;
/// The kernel command line the boot loader gives the disk's kernel: the root filesystem by its label,
/// the console on the first serial port, `loglevel=6` so the kernel's `Linux version` line (a notice)
/// marks its start on the console, `no_timer_check` (a VM's timer interrupt can arrive late under
/// emulation on a loaded host, and the kernel's IO-APIC timer check then panics: seen here once in
/// three TCG boots), and systemd's status lines off (the workload service prints the boot's
/// timestamps instead).
pub fn boot_cmdline(filesystem_label: &str) -> String {
    format!("root=LABEL={filesystem_label} ro console=ttyS0 panic=-1 loglevel=6 no_timer_check systemd.show_status=no")
}

/// Everything the guest files and the boot loader set-up contribute to the disk's input hash.
pub fn digest_input() -> String {
    let mut text = format!("unit {WORKLOAD_UNIT}\nrun {RUN_WORKLOAD}\nmasked {MASKED_TARGET}\n");
    for (name, script) in WORKLOADS {
        text.push_str(&format!("workload {name} {script}\n"));
    }
    text.push_str(&format!("boot {}\n{}\n", boot_cmdline("LABEL"), syslinux_cfg("LABEL")));
    text
}

/// Writes the workload service, its program and the workloads into `tree`, and enables the service.
pub fn install_guest_files(tree: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let workloads = tree.join("boxbench/workloads");
    fs::create_dir_all(&workloads)?;
    let executable = |path: &Path, text: &str| -> io::Result<()> {
        fs::write(path, text)?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o755))
    };
    for (name, script) in WORKLOADS {
        executable(&workloads.join(name), script)?;
    }
    executable(&tree.join("boxbench/run-workload"), RUN_WORKLOAD)?;
    let units = tree.join("etc/systemd/system");
    fs::create_dir_all(units.join("multi-user.target.wants"))?;
    fs::write(units.join(WORKLOAD_UNIT_NAME), WORKLOAD_UNIT)?;
    let wanted = units.join("multi-user.target.wants").join(WORKLOAD_UNIT_NAME);
    match fs::remove_file(&wanted) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::os::unix::fs::symlink(format!("/etc/systemd/system/{WORKLOAD_UNIT_NAME}"), wanted)?;
    // No login prompt: a getty hangs up the console it starts on (vhangup), and the workload's lines
    // written before that fail with EIO (seen in systemd-nspawn, whose console-getty starts as
    // multi-user.target is reached). The console belongs to the workload.
    let getty = units.join(MASKED_TARGET);
    match fs::remove_file(&getty) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::os::unix::fs::symlink("/dev/null", getty)
}

/// The unit masked in the disk (every getty, on the serial port, a VT or a container's console).
pub const MASKED_TARGET: &str = "getty.target";

/// SYSLINUX's configuration: output on the first serial port too, no prompt, one entry.
pub fn syslinux_cfg(filesystem_label: &str) -> String {
    format!(
        "SERIAL 0 115200\nPROMPT 0\nTIMEOUT 0\nDEFAULT debian\nLABEL debian\n  LINUX /vmlinuz\n  INITRD /initrd.img\n  \
         APPEND {}\n",
        boot_cmdline(filesystem_label)
    )
}

/// The `sfdisk` script of the bootable disk: the active FAT16 boot partition, then the root partition
/// of `root_bytes`.
pub fn partition_script(root_bytes: u64) -> String {
    let boot_start = FIRST_PARTITION_OFFSET / SECTOR;
    let boot_sectors = BOOT_PARTITION_BYTES / SECTOR;
    format!(
        "label: dos\nstart={boot_start}, size={boot_sectors}, type=6, bootable\nstart={}, size={}, type=83\n",
        boot_start + boot_sectors,
        root_bytes / SECTOR
    )
}

/// Where the root partition starts in the bootable disk.
pub fn root_partition_offset() -> u64 {
    FIRST_PARTITION_OFFSET + BOOT_PARTITION_BYTES
}

/// One host command of the bootable disk's build that failed.
#[derive(Debug, thiserror::Error)]
pub enum BootableError {
    /// The command could not be run (its Debian package is named).
    #[error("cannot run {tool} (install the Debian package {package}): {source}")]
    MissingTool { tool: &'static str, package: &'static str, source: io::Error },
    /// The command failed.
    #[error("bootable disk step `{step}` failed: {output}")]
    Step { step: String, output: String },
    /// A file could not be written.
    #[error("{path}: {source}")]
    Io { path: std::path::PathBuf, source: io::Error },
}

/// SYSLINUX's master boot record (Debian `syslinux-common`).
pub const SYSLINUX_MBR: &str = "/usr/lib/syslinux/mbr/mbr.bin";

/// Makes `dest`, the bootable disk: partition table, SYSLINUX's MBR, the FAT boot partition with the
/// kernel and initramfs, and `root_fs` (the ext4 image) as the second partition. `work` is a scratch
/// directory the caller removes.
pub fn make_bootable_disk(
    root_fs: &Path,
    kernel: &Path,
    initrd: &Path,
    filesystem_label: &str,
    work: &Path,
    dest: &Path,
) -> Result<(), BootableError> {
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| BootableError::Io { path, source }
    };
    let mbr = fs::read(SYSLINUX_MBR).map_err(|source| BootableError::MissingTool {
        tool: "syslinux mbr.bin",
        package: "syslinux-common",
        source,
    })?;
    let boot = work.join("boot.fat");
    let _ = fs::remove_file(&boot);
    let kib = (BOOT_PARTITION_BYTES / 1024).to_string();
    run("mkfs.vfat", "dosfstools", &["-F", "16", "-n", "BOOT", "-C", path_str(&boot), &kib])?;
    let cfg = work.join("syslinux.cfg");
    fs::write(&cfg, syslinux_cfg(filesystem_label)).map_err(io_err(&cfg))?;
    for (file, name) in [(kernel, "::/vmlinuz"), (initrd, "::/initrd.img"), (cfg.as_path(), "::/syslinux.cfg")] {
        run("mcopy", "mtools", &["-o", "-i", path_str(&boot), path_str(file), name])?;
    }
    run("syslinux", "syslinux", &["--install", path_str(&boot)])?;

    let root_bytes = fs::metadata(root_fs).map_err(io_err(root_fs))?.len();
    let disk = fs::File::create(dest).map_err(io_err(dest))?;
    disk.set_len(root_partition_offset() + root_bytes).map_err(io_err(dest))?;
    drop(disk);
    run_with_input(
        "sfdisk",
        "fdisk",
        &["--quiet", "--no-reread", "--no-tell-kernel", path_str(dest)],
        &partition_script(root_bytes),
    )?;
    let mut disk = fs::OpenOptions::new().write(true).open(dest).map_err(io_err(dest))?;
    // The boot code area of the MBR ends at byte 440, where the disk signature and the partition
    // table sfdisk wrote begin.
    disk.write_all(&mbr[..mbr.len().min(440)]).map_err(io_err(dest))?;
    copy_sparse(&boot, &mut disk, FIRST_PARTITION_OFFSET).map_err(io_err(dest))?;
    copy_sparse(root_fs, &mut disk, root_partition_offset()).map_err(io_err(dest))?;
    disk.sync_all().map_err(io_err(dest))
}

/// Copies `from` into `to` at `offset`, skipping all-zero blocks so the disk stays sparse.
fn copy_sparse(from: &Path, to: &mut fs::File, offset: u64) -> io::Result<()> {
    use std::io::Read;
    let mut source = fs::File::open(from)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut at = offset;
    loop {
        let n = source.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        for chunk in buf[..n].chunks(4096) {
            if chunk.iter().any(|b| *b != 0) {
                to.seek(SeekFrom::Start(at))?;
                to.write_all(chunk)?;
            }
            at += chunk.len() as u64;
        }
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap_or_default()
}

fn run(tool: &'static str, package: &'static str, args: &[&str]) -> Result<(), BootableError> {
    run_with_input(tool, package, args, "")
}

fn run_with_input(tool: &'static str, package: &'static str, args: &[&str], input: &str) -> Result<(), BootableError> {
    use std::process::Stdio;
    let mut child = Command::new(tool)
        .args(args)
        .env("LC_ALL", "C")
        .env("MTOOLS_SKIP_CHECK", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| BootableError::MissingTool { tool, package, source })?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input.as_bytes());
    }
    let output = child.wait_with_output().map_err(|source| BootableError::MissingTool { tool, package, source })?;
    if output.status.success() {
        return Ok(());
    }
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    let tail: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    Err(BootableError::Step {
        step: format!("{tool} {}", args.join(" ")),
        output: format!("{} / {}", output.status, tail[tail.len().saturating_sub(4)..].join(" / ")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_script_puts_boot_then_root_after_the_first_mib() {
        let script = partition_script(100 << 20);
        assert_eq!(
            script,
            "label: dos\nstart=2048, size=131072, type=6, bootable\nstart=133120, size=204800, type=83\n"
        );
        assert_eq!(root_partition_offset(), 133_120 * 512);
    }

    #[test]
    fn syslinux_boots_the_label_on_the_serial_console() {
        let cfg = syslinux_cfg("boxbench-root");
        assert!(cfg.starts_with("SERIAL 0 115200\n"), "{cfg}");
        assert!(cfg.contains("APPEND root=LABEL=boxbench-root ro console=ttyS0"), "{cfg}");
    }

    #[test]
    fn guest_files_are_installed_and_the_service_enabled() {
        let dir = tempfile::tempdir().unwrap();
        install_guest_files(dir.path()).unwrap();
        install_guest_files(dir.path()).unwrap();
        let link = dir.path().join("etc/systemd/system/multi-user.target.wants/boxbench-workload.service");
        assert_eq!(fs::read_link(link).unwrap(), Path::new("/etc/systemd/system/boxbench-workload.service"));
        let uname = fs::read_to_string(dir.path().join("boxbench/workloads/uname")).unwrap();
        assert!(uname.contains("uname -r"));
        assert!(RUN_WORKLOAD.contains("BOXBENCH_EXIT_STATUS="));
        assert!(WORKLOAD_UNIT.contains("After=multi-user.target"));
        assert_eq!(fs::read_link(dir.path().join("etc/systemd/system/getty.target")).unwrap(), Path::new("/dev/null"));
    }

    #[test]
    fn sparse_copy_keeps_the_data_at_its_offset() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("from");
        let mut data = vec![0u8; 10_000];
        data[5000] = 7;
        fs::write(&from, &data).unwrap();
        let to_path = dir.path().join("to");
        let mut to = fs::File::create(&to_path).unwrap();
        to.set_len(20_000).unwrap();
        copy_sparse(&from, &mut to, 1000).unwrap();
        let written = fs::read(&to_path).unwrap();
        assert_eq!(written[6000], 7);
        assert_eq!(written.iter().filter(|b| **b != 0).count(), 1);
    }
}
