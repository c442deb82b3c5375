//! The records a VMM child sends its parent over a pipe: fixed 32-byte headers stamped with
//! CLOCK_MONOTONIC (valid across the two processes), some followed by a short text.
//!
//! Each record goes out in one `write` of at most `PIPE_BUF` bytes, which the kernel never interleaves
//! with another writer's, so vCPU threads can report concurrently without a lock.

use boxbench_core::MonotonicNs;

use crate::observer::BuildStep;

/// Size of a record header.
pub const HEADER_LEN: usize = 32;
/// Longest text a record carries (the whole record stays within `PIPE_BUF`).
pub const MAX_TEXT_LEN: usize = 4096 - HEADER_LEN;

const KIND_FIRST_ENTRY: u32 = 1;
const KIND_BOOT_TIMER: u32 = 2;
const KIND_MARKER_MEMORY: u32 = 3;
const KIND_EXIT_MEMORY: u32 = 4;
const KIND_IGNORED: u32 = 5;
const KIND_EXIT: u32 = 6;
const KIND_FAILED: u32 = 7;
const KIND_CGROUP_JOINED: u32 = 8;
const KIND_VCPUS_STOPPED: u32 = 9;
const KIND_BUILD_STEP: u32 = 10;

/// One thing the child reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChildEvent {
    /// The child is in the instance cgroup (cgroup v1 migration can take milliseconds: it waits for
    /// an RCU grace period).
    CgroupJoined { at: MonotonicNs },
    /// A step of building the VM completed.
    BuildStep { step: BuildStep, at: MonotonicNs },
    /// The boot vCPU is about to enter the guest for the first time.
    FirstEntry { at: MonotonicNs },
    /// The guest wrote the boot timer.
    BootTimer { at: MonotonicNs },
    /// The VMM's memory when the guest printed the marker.
    MarkerMemory { at: MonotonicNs, pss_bytes: u64, overhead_bytes: u64 },
    /// Every vCPU has stopped; the VM's KVM objects and memory are about to be released.
    VcpusStopped { at: MonotonicNs },
    /// The VMM's memory when the VM ended (before guest memory was released).
    ExitMemory { at: MonotonicNs, overhead_bytes: u64 },
    /// Guest accesses to absent devices during the whole run.
    Ignored { port_io: u64, mmio: u64 },
    /// The VM ended; `clean` for a guest reboot, otherwise `reason` says how.
    Exit { at: MonotonicNs, clean: bool, reason: String },
    /// The VMM child failed before or while building the VM.
    Failed { reason: String },
}

fn header(kind: u32, aux: u32, at: MonotonicNs, a: u64, b: u64) -> Vec<u8> {
    let mut record = Vec::with_capacity(HEADER_LEN);
    record.extend_from_slice(&kind.to_le_bytes());
    record.extend_from_slice(&aux.to_le_bytes());
    record.extend_from_slice(&at.0.to_le_bytes());
    record.extend_from_slice(&a.to_le_bytes());
    record.extend_from_slice(&b.to_le_bytes());
    record
}

fn with_text(mut record: Vec<u8>, text: &str) -> Vec<u8> {
    let mut end = text.len().min(MAX_TEXT_LEN);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    record[4..8].copy_from_slice(&(end as u32).to_le_bytes());
    record.extend_from_slice(&text.as_bytes()[..end]);
    record
}

impl ChildEvent {
    /// The record's bytes, to be written in one `write`.
    pub fn encode(&self) -> Vec<u8> {
        let none = MonotonicNs(0);
        match self {
            ChildEvent::CgroupJoined { at } => header(KIND_CGROUP_JOINED, 0, *at, 0, 0),
            ChildEvent::VcpusStopped { at } => header(KIND_VCPUS_STOPPED, 0, *at, 0, 0),
            ChildEvent::BuildStep { step, at } => {
                let index = BuildStep::ALL.iter().position(|s| s == step).unwrap_or(usize::MAX) as u32;
                header(KIND_BUILD_STEP, index, *at, 0, 0)
            }
            ChildEvent::FirstEntry { at } => header(KIND_FIRST_ENTRY, 0, *at, 0, 0),
            ChildEvent::BootTimer { at } => header(KIND_BOOT_TIMER, 0, *at, 0, 0),
            ChildEvent::MarkerMemory { at, pss_bytes, overhead_bytes } => {
                header(KIND_MARKER_MEMORY, 0, *at, *pss_bytes, *overhead_bytes)
            }
            ChildEvent::ExitMemory { at, overhead_bytes } => header(KIND_EXIT_MEMORY, 0, *at, *overhead_bytes, 0),
            ChildEvent::Ignored { port_io, mmio } => header(KIND_IGNORED, 0, none, *port_io, *mmio),
            ChildEvent::Exit { at, clean, reason } => {
                with_text(header(KIND_EXIT, 0, *at, u64::from(*clean), 0), reason)
            }
            ChildEvent::Failed { reason } => with_text(header(KIND_FAILED, 0, none, 0, 0), reason),
        }
    }
}

/// Reassembles records from a byte stream that arrives in arbitrary pieces.
#[derive(Debug, Default)]
pub struct EventDecoder {
    pending: Vec<u8>,
}

impl EventDecoder {
    /// Adds bytes read from the pipe; returns every record they completed.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<ChildEvent> {
        self.pending.extend_from_slice(bytes);
        let mut events = Vec::new();
        loop {
            if self.pending.len() < HEADER_LEN {
                break;
            }
            let word = |at: usize| u64::from_le_bytes(self.pending[at..at + 8].try_into().unwrap_or([0; 8]));
            let kind = u32::from_le_bytes([self.pending[0], self.pending[1], self.pending[2], self.pending[3]]);
            let aux = u32::from_le_bytes([self.pending[4], self.pending[5], self.pending[6], self.pending[7]]);
            let (at, a, b) = (MonotonicNs(word(8)), word(16), word(24));
            let text_len = if matches!(kind, KIND_EXIT | KIND_FAILED) { aux as usize } else { 0 };
            if self.pending.len() < HEADER_LEN + text_len {
                break;
            }
            let text = String::from_utf8_lossy(&self.pending[HEADER_LEN..HEADER_LEN + text_len]).into_owned();
            self.pending.drain(..HEADER_LEN + text_len);
            events.push(match kind {
                KIND_CGROUP_JOINED => ChildEvent::CgroupJoined { at },
                KIND_VCPUS_STOPPED => ChildEvent::VcpusStopped { at },
                KIND_BUILD_STEP => match BuildStep::ALL.get(aux as usize) {
                    Some(&step) => ChildEvent::BuildStep { step, at },
                    None => ChildEvent::Failed { reason: format!("VMM child sent an unknown build step {aux}") },
                },
                KIND_FIRST_ENTRY => ChildEvent::FirstEntry { at },
                KIND_BOOT_TIMER => ChildEvent::BootTimer { at },
                KIND_MARKER_MEMORY => ChildEvent::MarkerMemory { at, pss_bytes: a, overhead_bytes: b },
                KIND_EXIT_MEMORY => ChildEvent::ExitMemory { at, overhead_bytes: a },
                KIND_IGNORED => ChildEvent::Ignored { port_io: a, mmio: b },
                KIND_EXIT => ChildEvent::Exit { at, clean: a == 1, reason: text },
                KIND_FAILED => ChildEvent::Failed { reason: text },
                other => ChildEvent::Failed { reason: format!("VMM child sent an unknown record kind {other}") },
            });
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_arbitrary_splits() {
        let events = vec![
            ChildEvent::CgroupJoined { at: MonotonicNs(5) },
            ChildEvent::BuildStep { step: BuildStep::MemoryMapped, at: MonotonicNs(7) },
            ChildEvent::BuildStep { step: BuildStep::VcpusConfigured, at: MonotonicNs(8) },
            ChildEvent::FirstEntry { at: MonotonicNs(10) },
            ChildEvent::MarkerMemory { at: MonotonicNs(20), pss_bytes: 3 << 20, overhead_bytes: 1 << 20 },
            ChildEvent::Ignored { port_io: 7, mmio: 1 },
            ChildEvent::VcpusStopped { at: MonotonicNs(25) },
            ChildEvent::Exit { at: MonotonicNs(30), clean: false, reason: "triple fault on vCPU 0".into() },
            ChildEvent::Failed { reason: "kernel /x: no such file".into() },
        ];
        let stream: Vec<u8> = events.iter().flat_map(|e| e.encode()).collect();
        for split in [1, 7, 32, 33, 100] {
            let mut decoder = EventDecoder::default();
            let mut decoded = Vec::new();
            for piece in stream.chunks(split) {
                decoded.extend(decoder.feed(piece));
            }
            assert_eq!(decoded, events, "split {split}");
        }
    }

    #[test]
    fn long_text_is_cut_to_one_atomic_write() {
        let reason = "é".repeat(3000);
        let record = ChildEvent::Failed { reason }.encode();
        assert!(record.len() <= 4096);
        let decoded = EventDecoder::default().feed(&record);
        let ChildEvent::Failed { reason } = &decoded[0] else { panic!("{decoded:?}") };
        assert!(reason.chars().all(|c| c == 'é'));
    }
}
