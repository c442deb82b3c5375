//! virtio-blk (virtio 1.2 section 5.2) on a raw disk image: read, write, flush and get-id, one
//! queue, a read-only option.
//!
//! A request is a descriptor chain: a 16-byte header the driver wrote (type, reserved, sector), the
//! data buffers, and a last one-byte buffer the device writes the status into. Every part is checked
//! against the chain before any I/O: a chain too short to hold a header and a status, a header or
//! status the wrong way round, data buffers the wrong way for the request, or a range past the end
//! of the disk ends the request with `VIRTIO_BLK_S_IOERR` (or nothing, when there is no status byte
//! to write) and no I/O. Data moves between the file and guest memory through one fixed bounce
//! buffer, so nothing the guest says sizes an allocation; a descriptor outside guest memory fails
//! its request. Loops and over-long chains end where `virtio-queue` stops following them (at the
//! queue size), which leaves the chain without its status: such a chain is returned unused.

use std::os::unix::fs::FileExt;

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP,
    VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;
use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

use super::mmio::VirtioDevice;
use crate::disk::{DiskImage, SECTOR_SIZE};

/// The queue size offered: Firecracker's and QEMU's default for virtio-blk.
pub const QUEUE_SIZE: u16 = 256;
/// The size of the request header (`struct virtio_blk_outhdr`).
const HEADER_LEN: u32 = 16;
/// The bounce buffer between the file and guest memory.
const BOUNCE_LEN: usize = 64 << 10;

/// virtio-blk on a disk image.
#[derive(Debug)]
pub struct Block {
    disk: DiskImage,
    id: [u8; VIRTIO_BLK_ID_BYTES as usize],
    bounce: Vec<u8>,
}

/// A request that failed, with the status the driver gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    IoError,
    Unsupported,
}

impl Failure {
    fn status(self) -> u8 {
        match self {
            Failure::IoError => VIRTIO_BLK_S_IOERR as u8,
            Failure::Unsupported => VIRTIO_BLK_S_UNSUPP as u8,
        }
    }
}

impl Block {
    /// The device for `disk`. Its id (`VIRTIO_BLK_T_GET_ID`, the guest's `/sys/block/vdX/serial`) is
    /// the image's file name, cut to the 20 bytes virtio-blk allows.
    pub fn new(disk: DiskImage) -> Self {
        let mut id = [0u8; VIRTIO_BLK_ID_BYTES as usize];
        let name = disk.path().file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let name = name.as_bytes();
        let len = name.len().min(id.len());
        id[..len].copy_from_slice(&name[..len]);
        Self { disk, id, bounce: vec![0; BOUNCE_LEN] }
    }

    /// The disk behind the device.
    pub fn disk(&self) -> &DiskImage {
        &self.disk
    }

    /// Serves one chain; returns how many bytes it wrote into guest memory (the used length), and
    /// `None` for a chain with no status byte to answer in.
    fn serve(&mut self, memory: &GuestMemoryMmap, descriptors: &[Descriptor]) -> Option<u32> {
        let (header, rest) = descriptors.split_first()?;
        let (status, data) = rest.split_last()?;
        if !status.is_write_only() || status.len() < 1 {
            return None;
        }
        let (written, outcome) = match self.execute(memory, header, data) {
            Ok(written) => (written, VIRTIO_BLK_S_OK as u8),
            Err(failure) => (0, failure.status()),
        };
        memory.write_obj(outcome, status.addr()).ok()?;
        Some(written.saturating_add(1))
    }

    /// Executes the request; returns the data bytes written into guest memory.
    fn execute(&mut self, memory: &GuestMemoryMmap, header: &Descriptor, data: &[Descriptor]) -> Result<u32, Failure> {
        if header.is_write_only() || header.len() < HEADER_LEN {
            return Err(Failure::IoError);
        }
        let bytes: [u8; HEADER_LEN as usize] = memory.read_obj(header.addr()).map_err(|_| Failure::IoError)?;
        let request = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let sector = u64::from_le_bytes(bytes[8..16].try_into().map_err(|_| Failure::IoError)?);
        match request {
            VIRTIO_BLK_T_IN => {
                let offset = self.checked_range(sector, data, true)?;
                self.read_into(memory, offset, data)
            }
            VIRTIO_BLK_T_OUT => {
                if self.disk.read_only() {
                    // virtio 1.2, 5.2.6.1: a write to a read-only device fails with IOERR.
                    return Err(Failure::IoError);
                }
                let offset = self.checked_range(sector, data, false)?;
                self.write_from(memory, offset, data)?;
                Ok(0)
            }
            VIRTIO_BLK_T_FLUSH => {
                self.disk.file().sync_data().map_err(|_| Failure::IoError)?;
                Ok(0)
            }
            VIRTIO_BLK_T_GET_ID => {
                let mut written = 0usize;
                for descriptor in data {
                    if !descriptor.is_write_only() {
                        return Err(Failure::IoError);
                    }
                    let rest = &self.id[written..];
                    let len = rest.len().min(descriptor.len() as usize);
                    memory.write_slice(&rest[..len], descriptor.addr()).map_err(|_| Failure::IoError)?;
                    written += len;
                }
                Ok(written as u32)
            }
            _ => Err(Failure::Unsupported),
        }
    }

    /// Checks that every data buffer goes the right way (`into_guest`: device-writable) and that
    /// their total, from `sector`, stays on the disk; returns the byte offset.
    fn checked_range(&self, sector: u64, data: &[Descriptor], into_guest: bool) -> Result<u64, Failure> {
        if data.iter().any(|d| d.is_write_only() != into_guest) {
            return Err(Failure::IoError);
        }
        let total: u64 = data.iter().map(|d| u64::from(d.len())).sum();
        let offset = sector.checked_mul(SECTOR_SIZE).ok_or(Failure::IoError)?;
        match offset.checked_add(total) {
            Some(end) if end <= self.disk.size() => Ok(offset),
            _ => Err(Failure::IoError),
        }
    }

    fn read_into(&mut self, memory: &GuestMemoryMmap, mut offset: u64, data: &[Descriptor]) -> Result<u32, Failure> {
        let mut written = 0u32;
        for descriptor in data {
            let mut done = 0u64;
            while done < u64::from(descriptor.len()) {
                let len = (u64::from(descriptor.len()) - done).min(BOUNCE_LEN as u64) as usize;
                let chunk = &mut self.bounce[..len];
                self.disk.file().read_exact_at(chunk, offset).map_err(|_| Failure::IoError)?;
                let address = descriptor.addr().checked_add(done).ok_or(Failure::IoError)?;
                memory.write_slice(chunk, address).map_err(|_| Failure::IoError)?;
                offset += len as u64;
                done += len as u64;
                written = written.saturating_add(len as u32);
            }
        }
        Ok(written)
    }

    fn write_from(&mut self, memory: &GuestMemoryMmap, mut offset: u64, data: &[Descriptor]) -> Result<(), Failure> {
        for descriptor in data {
            let mut done = 0u64;
            while done < u64::from(descriptor.len()) {
                let len = (u64::from(descriptor.len()) - done).min(BOUNCE_LEN as u64) as usize;
                let chunk = &mut self.bounce[..len];
                let address: GuestAddress = descriptor.addr().checked_add(done).ok_or(Failure::IoError)?;
                memory.read_slice(chunk, address).map_err(|_| Failure::IoError)?;
                self.disk.file().write_all_at(chunk, offset).map_err(|_| Failure::IoError)?;
                offset += len as u64;
                done += len as u64;
            }
        }
        Ok(())
    }

    /// The configuration space (`struct virtio_blk_config`): the capacity in sectors; the fields of
    /// features not offered read as zero.
    fn config_bytes(&self) -> [u8; 8] {
        self.disk.sectors().to_le_bytes()
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn features(&self) -> u64 {
        let read_only = if self.disk.read_only() { 1 << VIRTIO_BLK_F_RO } else { 0 };
        1 << VIRTIO_BLK_F_FLUSH | read_only
    }

    fn queue_max_size(&self) -> u16 {
        QUEUE_SIZE
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let config = self.config_bytes();
        for (i, byte) in data.iter_mut().enumerate() {
            let at = offset.checked_add(i as u64).and_then(|at| usize::try_from(at).ok());
            *byte = at.and_then(|at| config.get(at)).copied().unwrap_or(0);
        }
    }

    fn process_queue(&mut self, memory: &GuestMemoryMmap, queue: &mut Queue) -> bool {
        let mut used = false;
        while let Some(chain) = queue.pop_descriptor_chain(memory) {
            let head = chain.head_index();
            // At most the queue size of descriptors: virtio-queue stops a looping chain there.
            let descriptors: Vec<Descriptor> = chain.collect();
            let len = self.serve(memory, &descriptors).unwrap_or(0);
            if queue.add_used(memory, head, len).is_err() {
                break;
            }
            used = true;
        }
        used
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use vm_memory::GuestAddress;
    use vmm_sys_util::eventfd::EventFd;

    use super::super::mmio::MmioTransport;
    use super::super::mmio::tests::{AVAIL, DESC, USED, bring_up, memory};
    use super::*;
    use crate::disk::DiskConfig;
    use virtio_bindings::virtio_mmio::VIRTIO_MMIO_QUEUE_NOTIFY;

    const HEADER_AT: u64 = 0x10000;
    const DATA_AT: u64 = 0x20000;
    const STATUS_AT: u64 = 0x30000;

    struct Fixture {
        transport: MmioTransport<Block>,
        memory: GuestMemoryMmap,
        _dir: tempfile::TempDir,
        path: std::path::PathBuf,
        avail: u16,
    }

    fn disk(dir: &Path, read_only: bool) -> (DiskImage, std::path::PathBuf) {
        let path = dir.join("test-disk.img");
        let content: Vec<u8> = (0..64 * 512u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, content).unwrap();
        (DiskImage::open(&DiskConfig { path: path.clone(), read_only }).unwrap(), path)
    }

    fn fixture(read_only: bool) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let (disk, path) = disk(dir.path(), read_only);
        let memory = memory();
        let interrupt = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut transport = MmioTransport::new(Block::new(disk), memory.clone(), interrupt);
        let features = transport.device().features();
        bring_up(&mut transport, features, 16);
        Fixture { transport, memory, _dir: dir, path, avail: 0 }
    }

    impl Fixture {
        /// Puts a chain of `(address, len, device-writable)` descriptors at table entries 0.. and
        /// makes it available; returns the used length and the status byte.
        fn submit(&mut self, descriptors: &[(u64, u32, bool)]) -> (u32, u8) {
            let count = descriptors.len() as u16;
            let entries: Vec<(u64, u32, u16, u16)> = descriptors
                .iter()
                .enumerate()
                .map(|(i, &(address, len, writable))| {
                    let i = i as u16;
                    let mut flags = if writable { VRING_DESC_F_WRITE as u16 } else { 0 };
                    if i + 1 < count {
                        flags |= VRING_DESC_F_NEXT as u16;
                    }
                    (address, len, flags, i + 1)
                })
                .collect();
            self.submit_raw(&entries, 0)
        }

        /// Writes raw descriptor table entries `(address, len, flags, next)` and makes `head` available.
        fn submit_raw(&mut self, entries: &[(u64, u32, u16, u16)], head: u16) -> (u32, u8) {
            for (i, &(address, len, flags, next)) in entries.iter().enumerate() {
                let at = GuestAddress(DESC + 16 * i as u64);
                self.memory.write_obj(Descriptor::new(address, len, flags, next), at).unwrap();
            }
            self.memory.write_obj(0xeeu8, GuestAddress(STATUS_AT)).unwrap();
            let slot = u64::from(self.avail % 16);
            self.memory.write_obj(head, GuestAddress(AVAIL + 4 + 2 * slot)).unwrap();
            self.avail = self.avail.wrapping_add(1);
            self.memory.write_obj(self.avail, GuestAddress(AVAIL + 2)).unwrap();
            self.transport.write(u64::from(VIRTIO_MMIO_QUEUE_NOTIFY), &0u32.to_le_bytes());
            assert_eq!(self.memory.read_obj::<u16>(GuestAddress(USED + 2)).unwrap(), self.avail, "chain returned");
            let used_len = self.memory.read_obj::<u32>(GuestAddress(USED + 4 + 8 * slot + 4)).unwrap();
            (used_len, self.memory.read_obj(GuestAddress(STATUS_AT)).unwrap())
        }

        fn header(&self, request: u32, sector: u64) {
            let mut bytes = [0u8; 16];
            bytes[..4].copy_from_slice(&request.to_le_bytes());
            bytes[8..].copy_from_slice(&sector.to_le_bytes());
            self.memory.write_obj(bytes, GuestAddress(HEADER_AT)).unwrap();
        }

        fn file(&self) -> Vec<u8> {
            std::fs::read(&self.path).unwrap()
        }
    }

    const OK: u8 = VIRTIO_BLK_S_OK as u8;
    const IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;

    #[test]
    fn reads_writes_flushes_and_says_its_id() {
        let mut f = fixture(false);
        let before = f.file();
        f.header(VIRTIO_BLK_T_IN, 3);
        let (len, status) = f.submit(&[(HEADER_AT, 16, false), (DATA_AT, 1024, true), (STATUS_AT, 1, true)]);
        assert_eq!((len, status), (1025, OK));
        let mut read = vec![0u8; 1024];
        f.memory.read_slice(&mut read, GuestAddress(DATA_AT)).unwrap();
        assert_eq!(read, before[3 * 512..5 * 512]);

        let pattern: Vec<u8> = b"boxbench".iter().copied().cycle().take(512 * 2).collect();
        f.memory.write_slice(&pattern, GuestAddress(DATA_AT)).unwrap();
        f.header(VIRTIO_BLK_T_OUT, 10);
        // Two data buffers, split unevenly: the device follows the chain.
        let chain = [(HEADER_AT, 16, false), (DATA_AT, 700, false), (DATA_AT + 700, 324, false), (STATUS_AT, 1, true)];
        assert_eq!(f.submit(&chain), (1, OK));
        let after = f.file();
        assert_eq!(after[10 * 512..12 * 512], pattern[..]);
        assert_eq!(after[..10 * 512], before[..10 * 512], "nothing else changed");

        f.header(VIRTIO_BLK_T_FLUSH, 0);
        assert_eq!(f.submit(&[(HEADER_AT, 16, false), (STATUS_AT, 1, true)]), (1, OK));

        f.header(VIRTIO_BLK_T_GET_ID, 0);
        let (len, status) = f.submit(&[(HEADER_AT, 16, false), (DATA_AT, 20, true), (STATUS_AT, 1, true)]);
        assert_eq!((len, status), (21, OK));
        let mut id = [0u8; 20];
        f.memory.read_slice(&mut id, GuestAddress(DATA_AT)).unwrap();
        assert_eq!(&id[..13], b"test-disk.img");
        assert!(id[13..].iter().all(|&b| b == 0));

        f.header(99, 0);
        assert_eq!(f.submit(&[(HEADER_AT, 16, false), (STATUS_AT, 1, true)]), (1, VIRTIO_BLK_S_UNSUPP as u8));
    }

    #[test]
    fn a_read_only_disk_refuses_writes_and_still_reads() {
        let mut f = fixture(true);
        assert_ne!(f.transport.device().features() & 1 << VIRTIO_BLK_F_RO, 0);
        let before = f.file();
        f.memory.write_slice(&[0xaa; 512], GuestAddress(DATA_AT)).unwrap();
        f.header(VIRTIO_BLK_T_OUT, 0);
        assert_eq!(f.submit(&[(HEADER_AT, 16, false), (DATA_AT, 512, false), (STATUS_AT, 1, true)]), (1, IOERR));
        assert_eq!(f.file(), before);
        f.header(VIRTIO_BLK_T_IN, 0);
        let (_, status) = f.submit(&[(HEADER_AT, 16, false), (DATA_AT, 512, true), (STATUS_AT, 1, true)]);
        assert_eq!(status, OK);
    }

    #[test]
    fn malformed_requests_fail_without_touching_the_disk() {
        let mut f = fixture(false);
        let before = f.file();
        let size = before.len() as u64;
        f.memory.write_slice(&[0x55; 1024], GuestAddress(DATA_AT)).unwrap();
        type Chain = Vec<(u64, u32, bool)>;
        let cases: Vec<(u32, u64, Chain)> = vec![
            // Past the end of the disk, by one sector, and by an offset that overflows.
            (VIRTIO_BLK_T_OUT, size / 512, vec![(HEADER_AT, 16, false), (DATA_AT, 512, false), (STATUS_AT, 1, true)]),
            (VIRTIO_BLK_T_IN, u64::MAX / 256, vec![(HEADER_AT, 16, false), (DATA_AT, 512, true), (STATUS_AT, 1, true)]),
            // Oversized: more data than the disk holds.
            (VIRTIO_BLK_T_IN, 0, vec![(HEADER_AT, 16, false), (DATA_AT, 1 << 30, true), (STATUS_AT, 1, true)]),
            // Data the wrong way for the request.
            (VIRTIO_BLK_T_OUT, 0, vec![(HEADER_AT, 16, false), (DATA_AT, 512, true), (STATUS_AT, 1, true)]),
            (VIRTIO_BLK_T_IN, 0, vec![(HEADER_AT, 16, false), (DATA_AT, 512, false), (STATUS_AT, 1, true)]),
            // A short header, a device-writable header.
            (VIRTIO_BLK_T_OUT, 0, vec![(HEADER_AT, 8, false), (DATA_AT, 512, false), (STATUS_AT, 1, true)]),
            (VIRTIO_BLK_T_OUT, 0, vec![(HEADER_AT, 16, true), (DATA_AT, 512, false), (STATUS_AT, 1, true)]),
            // Data outside guest memory (1 MiB).
            (VIRTIO_BLK_T_OUT, 0, vec![(HEADER_AT, 16, false), (0xff000, 0x2000, false), (STATUS_AT, 1, true)]),
        ];
        for (request, sector, chain) in cases {
            f.header(request, sector);
            assert_eq!(f.submit(&chain), (1, IOERR), "request {request} sector {sector} {chain:?}");
        }
        assert_eq!(f.file(), before);
        // No status byte to answer in: returned unused, status untouched.
        f.header(VIRTIO_BLK_T_OUT, 0);
        assert_eq!(f.submit(&[(HEADER_AT, 16, false), (DATA_AT, 512, false)]).0, 0);
        assert_eq!(f.submit(&[(HEADER_AT, 16, false)]), (0, 0xee));
        assert_eq!(f.submit(&[(HEADER_AT, 16, false), (DATA_AT, 512, false), (STATUS_AT, 1, false)]), (0, 0xee));
        // A chain of more than 2^32 bytes, which virtio forbids: virtio-queue stops before its status.
        f.header(VIRTIO_BLK_T_IN, 0);
        assert_eq!(f.submit(&[(HEADER_AT, 16, false), (DATA_AT, u32::MAX, true), (STATUS_AT, 1, true)]), (0, 0xee));
        // A loop (0 → 1 → 0): followed to the queue size, then it has no status; returned unused.
        let next = VRING_DESC_F_NEXT as u16;
        let looping = [(HEADER_AT, 16, next, 1), (DATA_AT, 512, next, 0)];
        assert_eq!(f.submit_raw(&looping, 0), (0, 0xee));
        // A next index outside the table.
        let escaping = [(HEADER_AT, 16, next, 1000)];
        assert_eq!(f.submit_raw(&escaping, 0).0, 0);
        assert_eq!(f.file(), before);
    }
}
