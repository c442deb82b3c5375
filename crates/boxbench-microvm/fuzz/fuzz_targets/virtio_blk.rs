//! Fuzzes boxbench's virtio-blk behind its virtio-mmio transport, as a hostile guest driver would
//! drive it: arbitrary register writes (status, features, queue size and addresses, notify), then
//! an arbitrary descriptor table, available ring and guest memory contents — malformed chains,
//! loops, out-of-range addresses and sectors, oversized requests — and a notify. Checks that nothing
//! panics, that the disk never changes size, and that a read-only disk never changes. (A used-ring
//! invariant cannot be checked: a device-writable buffer may legally point at the rings.)

#![no_main]

use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use boxbench_microvm::devices::virtio::{Block, MmioTransport};
use boxbench_microvm::disk::{DiskConfig, DiskImage};
use libfuzzer_sys::fuzz_target;
use virtio_bindings::virtio_mmio::{
    VIRTIO_MMIO_DRIVER_FEATURES, VIRTIO_MMIO_DRIVER_FEATURES_SEL, VIRTIO_MMIO_QUEUE_AVAIL_LOW,
    VIRTIO_MMIO_QUEUE_DESC_LOW, VIRTIO_MMIO_QUEUE_NOTIFY, VIRTIO_MMIO_QUEUE_NUM, VIRTIO_MMIO_QUEUE_READY,
    VIRTIO_MMIO_QUEUE_USED_LOW, VIRTIO_MMIO_STATUS,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

/// Guest memory: 256 KiB, rings in the first pages, the rest for buffers.
const MEMORY: u64 = 256 << 10;
const DESC: u64 = 0x1000;
const AVAIL: u64 = 0x2000;
const USED: u64 = 0x3000;
const BLOB: u64 = 0x4000;
/// The disk: 64 sectors.
const DISK_BYTES: usize = 64 * 512;

#[derive(Debug, Arbitrary)]
struct Descriptor {
    /// Taken modulo guest memory (most requests then reach the device's checks); otherwise as is.
    in_memory: bool,
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

#[derive(Debug, Arbitrary)]
struct Input {
    read_only: bool,
    /// Register writes before the standard bring-up (offset within the window, value).
    before: Vec<(u16, u32)>,
    features: u64,
    queue_size: u16,
    descriptors: Vec<Descriptor>,
    avail: Vec<u16>,
    avail_idx: u16,
    /// Guest memory from `BLOB` on: request headers, data and status bytes.
    blob: Vec<u8>,
    /// Register writes after the bring-up, notifies among them.
    after: Vec<(u16, u32)>,
}

struct Disks {
    _dir: tempfile::TempDir,
    path: PathBuf,
    content: Vec<u8>,
}

fn disks() -> &'static Disks {
    static DISKS: OnceLock<Disks> = OnceLock::new();
    DISKS.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("fuzz.img");
        let content: Vec<u8> = (0..DISK_BYTES).map(|i| (i % 253) as u8).collect();
        std::fs::File::create(&path).and_then(|mut f| f.write_all(&content)).expect("the disk image");
        Disks { _dir: dir, path, content }
    })
}

fn write32(transport: &mut MmioTransport<Block>, register: u32, value: u32) {
    transport.write(u64::from(register), &value.to_le_bytes());
}

fuzz_target!(|input: Input| {
    let disks = disks();
    // Each input starts from the same disk: a writable run may have changed it.
    std::fs::write(&disks.path, &disks.content).expect("resetting the disk image");
    let config = DiskConfig { path: disks.path.clone(), read_only: input.read_only };
    let disk = DiskImage::open(&config).expect("the fuzz disk opens");
    let memory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEMORY as usize)]).expect("guest memory");
    let interrupt = EventFd::new(libc::EFD_NONBLOCK).expect("an eventfd");
    let mut transport = MmioTransport::new(Block::new(disk), memory.clone(), interrupt);

    for &(offset, value) in &input.before {
        transport.write(u64::from(offset), &value.to_le_bytes());
    }
    write32(&mut transport, VIRTIO_MMIO_STATUS, 1);
    write32(&mut transport, VIRTIO_MMIO_STATUS, 3);
    for select in 0..2u32 {
        write32(&mut transport, VIRTIO_MMIO_DRIVER_FEATURES_SEL, select);
        write32(&mut transport, VIRTIO_MMIO_DRIVER_FEATURES, (input.features >> (32 * select)) as u32);
    }
    write32(&mut transport, VIRTIO_MMIO_STATUS, 0xb);
    write32(&mut transport, VIRTIO_MMIO_QUEUE_NUM, u32::from(input.queue_size));
    write32(&mut transport, VIRTIO_MMIO_QUEUE_DESC_LOW, DESC as u32);
    write32(&mut transport, VIRTIO_MMIO_QUEUE_AVAIL_LOW, AVAIL as u32);
    write32(&mut transport, VIRTIO_MMIO_QUEUE_USED_LOW, USED as u32);
    write32(&mut transport, VIRTIO_MMIO_QUEUE_READY, 1);
    write32(&mut transport, VIRTIO_MMIO_STATUS, 0xf);

    for (i, d) in input.descriptors.iter().take(256).enumerate() {
        let addr = if d.in_memory { d.addr % MEMORY } else { d.addr };
        let mut raw = [0u8; 16];
        raw[..8].copy_from_slice(&addr.to_le_bytes());
        raw[8..12].copy_from_slice(&d.len.to_le_bytes());
        raw[12..14].copy_from_slice(&d.flags.to_le_bytes());
        raw[14..].copy_from_slice(&d.next.to_le_bytes());
        let _ = memory.write_slice(&raw, GuestAddress(DESC + 16 * i as u64));
    }
    for (i, head) in input.avail.iter().take(256).enumerate() {
        let _ = memory.write_obj(*head, GuestAddress(AVAIL + 4 + 2 * i as u64));
    }
    let _ = memory.write_obj(input.avail_idx, GuestAddress(AVAIL + 2));
    let blob = &input.blob[..input.blob.len().min((MEMORY - BLOB) as usize)];
    let _ = memory.write_slice(blob, GuestAddress(BLOB));

    write32(&mut transport, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
    for &(offset, value) in &input.after {
        transport.write(u64::from(offset), &value.to_le_bytes());
    }

    let after = std::fs::read(&disks.path).expect("reading the disk back");
    assert_eq!(after.len(), DISK_BYTES, "the disk changed size");
    if input.read_only {
        assert!(after == disks.content, "a read-only disk changed");
    }
});
