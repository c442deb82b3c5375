//! QEMU booting boxbench's full-OS disk ([`crate::qemu::GuestKind::FullOs`]) on `q35`, the classic
//! way: SeaBIOS reads the disk's master boot record, SYSLINUX loads the kernel and initramfs from the
//! FAT `/boot` partition, the initramfs mounts the root partition by label and starts systemd. The
//! workload's name reaches the guest through QEMU's firmware configuration device
//! (`-fw_cfg name=opt/boxbench/workload`), since the boot loader's command line is the disk's.
//!
//! `microvm` does not boot it: the disk's kernel (Debian's cloud kernel) has virtio-mmio only as a
//! module without command-line devices, so the root disk must be announced by ACPI (`acpi=on`), and
//! with ACPI on, QEMU 7.2's microvm under TCG left that kernel calibrating its TSC for minutes
//! (`tsc: No reference (HPET/PMTIMER) available`, measured here with and without `pit=on`).
//!
//! Each launch boots a qcow2 overlay of the disk made before the clock in the launch's own temporary
//! directory, so a launch cannot change the next; the disk itself is only read.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::{Command, Stdio};

use boxbench_core::{InstanceSpec, LaunchError};

/// The boot signature of a master boot record, in its last two bytes.
const MBR_SIGNATURE_OFFSET: u64 = 510;
const MBR_SIGNATURE: [u8; 2] = [0x55, 0xaa];

/// Checks that `disk` is a disk firmware can boot (a master boot record's signature); the error names
/// the file.
pub fn check_disk(disk: &Path) -> Result<(), LaunchError> {
    let invalid = |why: &str| LaunchError::InvalidSpec(format!("{}: {why}", disk.display()));
    let mut file = File::open(disk).map_err(|e| invalid(&format!("cannot open the disk image ({e})")))?;
    let mut found = [0u8; 2];
    let read = file.seek(SeekFrom::Start(MBR_SIGNATURE_OFFSET)).and_then(|_| file.read_exact(&mut found));
    if read.is_err() || found != MBR_SIGNATURE {
        return Err(invalid("not a bootable disk image (no master boot record)"));
    }
    Ok(())
}

/// Makes `overlay`, a qcow2 file backed by `disk` (read only through it).
pub fn create_overlay(qemu_img: &Path, disk: &Path, overlay: &Path) -> Result<(), LaunchError> {
    let output = Command::new(qemu_img)
        .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
        .arg(disk)
        .arg(overlay)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| LaunchError::Unsupported(format!("{}: {e} (Debian package qemu-utils)", qemu_img.display())))?;
    if !output.status.success() {
        return Err(LaunchError::InvalidSpec(format!(
            "{}: qemu-img could not make its overlay: {}",
            disk.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}

/// QEMU's arguments for the disk (the launch's overlay) and the workload's name.
pub fn arguments(spec: &InstanceSpec, overlay: &Path) -> Vec<String> {
    vec![
        "-drive".to_owned(),
        format!("file={},format=qcow2,if=virtio", overlay.display()),
        "-fw_cfg".to_owned(),
        format!("name=opt/boxbench/workload,string={}", spec.workload.name()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use boxbench_core::{ImagePaths, Workload};

    #[test]
    fn q35_boots_the_overlay_and_names_the_workload_through_fw_cfg() {
        let spec = InstanceSpec::new(Workload::Uname, ImagePaths::default());
        let args = arguments(&spec, Path::new("/t/o.qcow2"));
        assert_eq!(
            args.join(" "),
            "-drive file=/t/o.qcow2,format=qcow2,if=virtio -fw_cfg name=opt/boxbench/workload,string=uname"
        );
    }

    #[test]
    fn a_file_that_is_not_a_disk_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("notes.txt");
        std::fs::write(&text, "not a disk").unwrap();
        let err = check_disk(&text).unwrap_err().to_string();
        assert_eq!(err, format!("{}: not a bootable disk image (no master boot record)", text.display()));
        let err = check_disk(&dir.path().join("missing.raw")).unwrap_err().to_string();
        assert!(err.contains("missing.raw: cannot open the disk image"), "{err}");
        let mut mbr = vec![0u8; 512];
        mbr[510..].copy_from_slice(&MBR_SIGNATURE);
        let disk = dir.path().join("disk.raw");
        std::fs::write(&disk, &mbr).unwrap();
        check_disk(&disk).unwrap();
    }
}
