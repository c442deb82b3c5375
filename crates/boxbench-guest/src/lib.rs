//! boxbench's own minimal guest kernel, built by build.rs from guest-images/boxbench-guest with
//! the host's gcc and GNU binutils, and the parser of the report it prints on the serial port.
//!
//! The guest boots exactly like Linux (notes/vmm-guest-contract.md): the ELF carries a Xen PVH
//! note (32-bit entry at 0x100000) and its `e_entry` is the 64-bit boot protocol entry
//! (0x100200); the bzImage wraps the same image behind a Linux setup header (protocol 2.12,
//! `XLF_KERNEL_64`, real-mode setup code for BIOS loaders). It writes the boot timer, reads the
//! boot protocol it was handed, checksums the initrd, prints its entry line and `BOXBENCH_READY`,
//! starts the CPUs of the MP table, prints its report, and reboots through the i8042 controller.

use std::path::Path;

pub mod report;

pub use report::{BootEntry, GuestReport, ReportError};

/// Command-line switch: after the report line, spin forever with interrupts off and without
/// printing the ready marker (the VMM's deadline has to end the VM).
pub const TEST_SPIN: &str = "boxbench.test=spin";
/// Command-line switch: after the report line, load an IDT of limit zero and raise an exception:
/// a triple fault (KVM_EXIT_SHUTDOWN), without the ready marker.
pub const TEST_TRIPLE_FAULT: &str = "boxbench.test=triple-fault";
/// Command-line switch: after the report line, print `boxbench-guest flood N` lines forever,
/// without the ready marker.
pub const TEST_FLOOD: &str = "boxbench.test=flood";

/// The guest as an ELF64 file: a PT_NOTE segment with the PVH entry note, the 64-bit entry as
/// `e_entry`, one PT_LOAD segment at 0x100000.
pub fn elf_path() -> &'static Path {
    Path::new(concat!(env!("OUT_DIR"), "/boxbench-guest.elf"))
}

/// The guest as a bzImage (Linux boot protocol 2.12) loading at 0x100000.
pub fn bzimage_path() -> &'static Path {
    Path::new(concat!(env!("OUT_DIR"), "/boxbench-guest.bzImage"))
}
