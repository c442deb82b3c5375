//! Snapshots of a VM of boxbench's own guest: what a snapshot directory holds, how it is written and
//! how it is read back and checked before any VM is built from it.
//!
//! A snapshot directory holds two files:
//! - [`STATE_FILE`]: a header (magic, [`FORMAT_VERSION`], the boxbench version that wrote it, guest
//!   memory size, vCPU count), then each vCPU's state (general and special registers, x87/SSE state,
//!   MSRs, local APIC — with its timer —, multiprocessing state, pending events), the KVM clock and
//!   the serial port's registers, and a CRC-32 of everything before it. The VM's interrupt controllers
//!   are its LAPICs only ([`crate::interrupts::InterruptModel::SplitLapicOnly`]), saved per vCPU.
//! - [`MEMORY_FILE`]: guest RAM, its regions one after another, as a sparse file (pages of zeros are
//!   holes). A restored VM maps it MAP_PRIVATE: pages are read from the file as the guest touches them,
//!   and its writes stay its own, so one snapshot serves any number of VMs.
//!
//! A restored guest learns it was restored from CPUID leaf [`LEAF_RESTORED`] (as a VM generation id
//! tells a guest in Hyper-V or Firecracker), and boxbench's guest then prints its ready marker again.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use kvm_bindings::{
    kvm_clock_data, kvm_fpu, kvm_lapic_state, kvm_mp_state, kvm_msr_entry, kvm_regs, kvm_sregs, kvm_vcpu_events,
};
use vm_superio::serial::SerialState;

/// The state file's name inside a snapshot directory.
pub const STATE_FILE: &str = "vm.state";
/// The guest memory file's name inside a snapshot directory.
pub const MEMORY_FILE: &str = "memory";
/// The layout of the state file; any change to it changes this number.
pub const FORMAT_VERSION: u32 = 1;
/// The boxbench version that writes snapshots (a snapshot from another one is refused).
pub const BOXBENCH_VERSION: &str = env!("CARGO_PKG_VERSION");
/// CPUID leaf (in the hypervisor range) whose EAX is [`RESTORED_MAGIC`] in a restored VM.
pub const LEAF_RESTORED: u32 = 0x4000_0f00;
/// EAX of [`LEAF_RESTORED`] in a restored VM: "BXBR".
pub const RESTORED_MAGIC: u32 = u32::from_le_bytes(*b"BXBR");

const MAGIC: &[u8; 8] = b"BXBSNAP\0";
const PAGE: usize = 4096;

/// The saved state of one vCPU.
#[derive(Clone)]
pub struct VcpuState {
    /// General-purpose registers.
    pub regs: kvm_regs,
    /// Segment, control and descriptor-table registers, EFER, APIC base.
    pub sregs: kvm_sregs,
    /// x87/SSE state.
    pub fpu: kvm_fpu,
    /// Model-specific registers (those the VMM sets at boot, and the TSC).
    pub msrs: Vec<kvm_msr_entry>,
    /// Local APIC registers, its timer included.
    pub lapic: kvm_lapic_state,
    /// Running, halted, or waiting for a SIPI.
    pub mp_state: kvm_mp_state,
    /// Pending exceptions, interrupts and NMIs, interrupt shadow.
    pub events: kvm_vcpu_events,
}

impl std::fmt::Debug for VcpuState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VcpuState").field("rip", &self.regs.rip).field("msrs", &self.msrs.len()).finish()
    }
}

/// Everything of a VM but its memory.
#[derive(Debug, Clone)]
pub struct VmState {
    /// Guest memory in bytes.
    pub mem_bytes: u64,
    /// Each vCPU's state, by id.
    pub vcpus: Vec<VcpuState>,
    /// The KVM clock.
    pub clock: kvm_clock_data,
    /// The serial port's registers.
    pub serial: SerialState,
}

/// A snapshot that cannot be written or used; each message names the directory or file.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// The state file is not a snapshot.
    #[error("{}: not a boxbench VM snapshot (bad magic)", path.display())]
    NotASnapshot { path: PathBuf },
    /// Written in another layout.
    #[error("{}: snapshot format {found}, this boxbench reads format {FORMAT_VERSION}", path.display())]
    OtherFormat { path: PathBuf, found: u32 },
    /// Written by another boxbench version.
    #[error("{}: snapshot from boxbench {found}, this is boxbench {BOXBENCH_VERSION}", path.display())]
    OtherVersion { path: PathBuf, found: String },
    /// Shorter than its contents say, or damaged.
    #[error("{}: snapshot state is truncated or corrupt ({what})", path.display())]
    Corrupt { path: PathBuf, what: &'static str },
    /// The memory file is not as long as the guest memory.
    #[error("{}: {found} bytes, the snapshot's guest memory is {expected} bytes (truncated?)", path.display())]
    MemorySize { path: PathBuf, found: u64, expected: u64 },
    /// A vCPU's state could not be saved or put back.
    #[error("vCPU {id}: {reason}")]
    Vcpu { id: usize, reason: String },
    /// The snapshot is of another machine than the one asked for.
    #[error("{}: snapshot of a VM with {found}, not {asked}", dir.display())]
    Mismatch { dir: PathBuf, found: String, asked: String },
}

/// Plain C structs of integers (KVM's ABI): every bit pattern is a valid value.
///
/// # Safety
/// Implement only for `#[repr(C)]` types without pointers, references or padding-sensitive invariants.
unsafe trait Pod: Copy {}
// SAFETY: each is a #[repr(C)] struct of integers (and arrays and unions of them) from KVM's ABI.
unsafe impl Pod for kvm_regs {}
// SAFETY: as above.
unsafe impl Pod for kvm_sregs {}
// SAFETY: as above.
unsafe impl Pod for kvm_fpu {}
// SAFETY: as above.
unsafe impl Pod for kvm_msr_entry {}
// SAFETY: as above.
unsafe impl Pod for kvm_lapic_state {}
// SAFETY: as above.
unsafe impl Pod for kvm_mp_state {}
// SAFETY: as above.
unsafe impl Pod for kvm_vcpu_events {}
// SAFETY: as above.
unsafe impl Pod for kvm_clock_data {}

fn put<T: Pod>(out: &mut Vec<u8>, value: &T) {
    // SAFETY: `value` is a valid T of size_of::<T>() bytes; a Pod type's bytes may be read as u8.
    let bytes = unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), std::mem::size_of::<T>()) };
    out.extend_from_slice(bytes);
}

/// Reads the state file's fields in order, failing on the first one that is not there.
struct Reader<'a> {
    bytes: &'a [u8],
    path: &'a Path,
}

impl Reader<'_> {
    fn take(&mut self, len: usize, what: &'static str) -> Result<&[u8], SnapshotError> {
        if self.bytes.len() < len {
            return Err(SnapshotError::Corrupt { path: self.path.to_owned(), what });
        }
        let (head, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(head)
    }

    fn pod<T: Pod>(&mut self, what: &'static str) -> Result<T, SnapshotError> {
        let bytes = self.take(std::mem::size_of::<T>(), what)?;
        // SAFETY: `bytes` holds size_of::<T>() bytes; any bit pattern is a valid Pod value, and
        // read_unaligned needs no alignment.
        Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, SnapshotError> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap_or_default()))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, SnapshotError> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().unwrap_or_default()))
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, SnapshotError> {
        Ok(self.take(1, what)?[0])
    }
}

impl VmState {
    /// The state file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8192 * self.vcpus.len().max(1));
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&(BOXBENCH_VERSION.len() as u32).to_le_bytes());
        out.extend_from_slice(BOXBENCH_VERSION.as_bytes());
        out.extend_from_slice(&self.mem_bytes.to_le_bytes());
        out.extend_from_slice(&(self.vcpus.len() as u32).to_le_bytes());
        for vcpu in &self.vcpus {
            put(&mut out, &vcpu.regs);
            put(&mut out, &vcpu.sregs);
            put(&mut out, &vcpu.fpu);
            out.extend_from_slice(&(vcpu.msrs.len() as u32).to_le_bytes());
            for msr in &vcpu.msrs {
                put(&mut out, msr);
            }
            put(&mut out, &vcpu.lapic);
            put(&mut out, &vcpu.mp_state);
            put(&mut out, &vcpu.events);
        }
        put(&mut out, &self.clock);
        let s = &self.serial;
        out.extend_from_slice(&[
            s.baud_divisor_low,
            s.baud_divisor_high,
            s.interrupt_enable,
            s.interrupt_identification,
            s.line_control,
            s.line_status,
            s.modem_control,
            s.modem_status,
            s.scratch,
            s.in_buffer.len() as u8,
        ]);
        out.extend_from_slice(&s.in_buffer);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Parses a state file's bytes (`path` only names it in errors).
    pub fn decode(bytes: &[u8], path: &Path) -> Result<VmState, SnapshotError> {
        let corrupt = |what| SnapshotError::Corrupt { path: path.to_owned(), what };
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(SnapshotError::NotASnapshot { path: path.to_owned() });
        }
        let mut r = Reader { bytes: &bytes[MAGIC.len()..], path };
        let format = r.u32("format")?;
        if format != FORMAT_VERSION {
            return Err(SnapshotError::OtherFormat { path: path.to_owned(), found: format });
        }
        let version_len = r.u32("version")? as usize;
        if version_len > 64 {
            return Err(corrupt("version"));
        }
        let version = String::from_utf8_lossy(r.take(version_len, "version")?).into_owned();
        if version != BOXBENCH_VERSION {
            return Err(SnapshotError::OtherVersion { path: path.to_owned(), found: version });
        }
        let (body, crc) = bytes.split_at(bytes.len().checked_sub(4).ok_or_else(|| corrupt("checksum"))?);
        if crc32fast::hash(body).to_le_bytes() != crc {
            return Err(corrupt("checksum mismatch"));
        }
        let keep = r.bytes.len().checked_sub(4).ok_or_else(|| corrupt("checksum"))?;
        r.bytes = &r.bytes[..keep];
        let mem_bytes = r.u64("memory size")?;
        let count = r.u32("vCPU count")?;
        if count == 0 || count > u32::from(u8::MAX) {
            return Err(corrupt("vCPU count"));
        }
        let mut vcpus = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let regs = r.pod("registers")?;
            let sregs = r.pod("special registers")?;
            let fpu = r.pod("FPU")?;
            let msr_count = r.u32("MSR count")?;
            if msr_count > 1024 {
                return Err(corrupt("MSR count"));
            }
            let msrs = (0..msr_count).map(|_| r.pod("MSRs")).collect::<Result<Vec<_>, _>>()?;
            let lapic = r.pod("local APIC")?;
            let mp_state = r.pod("MP state")?;
            let events = r.pod("vCPU events")?;
            vcpus.push(VcpuState { regs, sregs, fpu, msrs, lapic, mp_state, events });
        }
        let clock = r.pod("clock")?;
        let mut serial = SerialState {
            baud_divisor_low: r.u8("serial")?,
            baud_divisor_high: r.u8("serial")?,
            interrupt_enable: r.u8("serial")?,
            interrupt_identification: r.u8("serial")?,
            line_control: r.u8("serial")?,
            line_status: r.u8("serial")?,
            modem_control: r.u8("serial")?,
            modem_status: r.u8("serial")?,
            scratch: r.u8("serial")?,
            in_buffer: Vec::new(),
        };
        let buffered = r.u8("serial")? as usize;
        serial.in_buffer = r.take(buffered, "serial")?.to_vec();
        if !r.bytes.is_empty() {
            return Err(corrupt("trailing bytes"));
        }
        Ok(VmState { mem_bytes, vcpus, clock, serial })
    }
}

/// A snapshot directory read and checked: the state, and the memory file open for mapping.
#[derive(Debug)]
pub struct Snapshot {
    /// The directory.
    pub dir: PathBuf,
    /// The VM's state.
    pub state: VmState,
    /// The memory file, [`VmState::mem_bytes`] long.
    pub memory: File,
}

impl Snapshot {
    /// Reads and checks the snapshot in `dir`: its state file whole, its memory file's length.
    pub fn open(dir: &Path) -> Result<Snapshot, SnapshotError> {
        let state_path = dir.join(STATE_FILE);
        let bytes =
            std::fs::read(&state_path).map_err(|source| SnapshotError::Io { path: state_path.clone(), source })?;
        let state = VmState::decode(&bytes, &state_path)?;
        let memory_path = dir.join(MEMORY_FILE);
        let io = |source| SnapshotError::Io { path: memory_path.clone(), source };
        let memory = File::open(&memory_path).map_err(io)?;
        let found = memory.metadata().map_err(io)?.len();
        if found != state.mem_bytes {
            return Err(SnapshotError::MemorySize { path: memory_path, found, expected: state.mem_bytes });
        }
        Ok(Snapshot { dir: dir.to_owned(), state, memory })
    }

    /// Refuses a snapshot of another machine than `memory_bytes` and `vcpus` (`None`: any size).
    pub fn check_machine(&self, memory_bytes: Option<u64>, vcpus: u8) -> Result<(), SnapshotError> {
        let found = (self.state.mem_bytes, self.state.vcpus.len());
        let asked = (memory_bytes.unwrap_or(found.0), usize::from(vcpus));
        if found == asked {
            return Ok(());
        }
        let describe = |(bytes, vcpus): (u64, usize)| format!("{} MiB and {vcpus} vCPU(s)", bytes >> 20);
        Err(SnapshotError::Mismatch { dir: self.dir.clone(), found: describe(found), asked: describe(asked) })
    }
}

/// Files a snapshot is written to, created (empty) before the VM runs: the VMM may open no file once
/// its seccomp filter is in place.
#[derive(Debug)]
pub struct SnapshotFiles {
    dir: PathBuf,
    state: File,
    memory: File,
}

impl SnapshotFiles {
    /// The two files' descriptors (a forked VMM child keeps them open).
    pub fn raw_fds(&self) -> [std::os::fd::RawFd; 2] {
        use std::os::fd::AsRawFd;
        [self.state.as_raw_fd(), self.memory.as_raw_fd()]
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates `dir` (if missing) and its two files, truncated.
    pub fn create(dir: &Path) -> Result<SnapshotFiles, SnapshotError> {
        std::fs::create_dir_all(dir).map_err(|source| SnapshotError::Io { path: dir.to_owned(), source })?;
        let create = |name: &str| {
            let path = dir.join(name);
            File::create(&path).map_err(|source| SnapshotError::Io { path, source })
        };
        Ok(SnapshotFiles { dir: dir.to_owned(), state: create(STATE_FILE)?, memory: create(MEMORY_FILE)? })
    }

    /// Writes `state` and guest memory (`regions`: host address and length of each RAM region, in
    /// guest address order). Zero pages are left as holes. The state file goes last, so a snapshot
    /// cut short has a state file that does not pass [`Snapshot::open`].
    ///
    /// # Safety
    /// Each region must be mapped and readable for its whole length during the call, with no vCPU
    /// running.
    pub unsafe fn write(&self, state: &VmState, regions: &[(usize, usize)]) -> Result<(), SnapshotError> {
        let memory_path = self.dir.join(MEMORY_FILE);
        let io = |source| SnapshotError::Io { path: memory_path.clone(), source };
        self.memory.set_len(state.mem_bytes).map_err(io)?;
        let mut offset = 0u64;
        for &(address, len) in regions {
            // SAFETY: the caller guarantees the region is mapped and readable, and no vCPU writes it.
            let bytes = unsafe { std::slice::from_raw_parts(address as *const u8, len) };
            let mut page = 0;
            while page < len {
                let is_data = |at: usize| bytes[at..(at + PAGE).min(len)].iter().any(|&b| b != 0);
                if !is_data(page) {
                    page += PAGE;
                    continue;
                }
                let start = page;
                while page < len && is_data(page) {
                    page += PAGE;
                }
                let end = page.min(len);
                self.memory.write_all_at(&bytes[start..end], offset + start as u64).map_err(io)?;
            }
            offset += len as u64;
        }
        let state_path = self.dir.join(STATE_FILE);
        (&self.state).write_all(&state.encode()).map_err(|source| SnapshotError::Io { path: state_path, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> VmState {
        let regs = kvm_regs { rip: 0x10_0abc, ..Default::default() };
        let vcpu = VcpuState {
            regs,
            sregs: kvm_sregs::default(),
            fpu: kvm_fpu::default(),
            msrs: vec![kvm_msr_entry { index: 0x10, data: 77, ..Default::default() }],
            lapic: kvm_lapic_state::default(),
            mp_state: kvm_mp_state { mp_state: 3 },
            events: kvm_vcpu_events::default(),
        };
        let serial = SerialState { scratch: 9, in_buffer: vec![1, 2], ..SerialState::default() };
        VmState { mem_bytes: 64 << 20, vcpus: vec![vcpu.clone(), vcpu], clock: kvm_clock_data::default(), serial }
    }

    #[test]
    fn state_round_trips() {
        let bytes = state().encode();
        let back = VmState::decode(&bytes, Path::new("x")).unwrap();
        assert_eq!(back.mem_bytes, 64 << 20);
        assert_eq!(back.vcpus.len(), 2);
        assert_eq!(back.vcpus[1].regs.rip, 0x10_0abc);
        assert_eq!(back.vcpus[0].msrs[0].data, 77);
        assert_eq!(back.vcpus[0].mp_state.mp_state, 3);
        assert_eq!(back.serial, state().serial);
    }

    #[test]
    fn truncated_corrupt_and_foreign_states_are_refused_naming_the_file() {
        let bytes = state().encode();
        let path = Path::new("/snap/vm.state");
        for cut in [0, 5, 20, bytes.len() / 2, bytes.len() - 1] {
            let message = VmState::decode(&bytes[..cut], path).unwrap_err().to_string();
            assert!(message.starts_with("/snap/vm.state: "), "{message}");
        }
        let mut flipped = bytes.clone();
        flipped[bytes.len() / 2] ^= 0x40;
        assert!(matches!(VmState::decode(&flipped, path), Err(SnapshotError::Corrupt { .. })));
        let mut other_format = bytes.clone();
        other_format[8] = 99;
        assert!(matches!(VmState::decode(&other_format, path), Err(SnapshotError::OtherFormat { found: 99, .. })));
        let mut other_version = bytes;
        let at = 16 + BOXBENCH_VERSION.len() - 1;
        other_version[at] = b'x';
        assert!(matches!(VmState::decode(&other_version, path), Err(SnapshotError::OtherVersion { .. })));
        assert!(matches!(VmState::decode(b"#!/bin/sh\n", path), Err(SnapshotError::NotASnapshot { .. })));
    }

    #[test]
    fn a_snapshot_of_another_machine_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STATE_FILE), state().encode()).unwrap();
        let memory = File::create(dir.path().join(MEMORY_FILE)).unwrap();
        memory.set_len(1 << 20).unwrap();
        let message = Snapshot::open(dir.path()).unwrap_err().to_string();
        assert!(message.contains("1048576 bytes") && message.contains("truncated"), "{message}");
        memory.set_len(64 << 20).unwrap();
        let snapshot = Snapshot::open(dir.path()).unwrap();
        assert!(snapshot.check_machine(None, 2).is_ok());
        assert!(snapshot.check_machine(Some(64 << 20), 2).is_ok());
        let message = snapshot.check_machine(Some(128 << 20), 1).unwrap_err().to_string();
        assert!(
            message.ends_with("snapshot of a VM with 64 MiB and 2 vCPU(s), not 128 MiB and 1 vCPU(s)"),
            "{message}"
        );
    }
}
