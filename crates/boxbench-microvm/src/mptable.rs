//! The Intel MultiProcessor Specification 1.4 table: how a guest without ACPI learns its CPUs, its
//! IOAPIC and how ISA interrupts are wired.
//!
//! The floating pointer ("_MP_") sits at the start of the EBDA, where an OS searches first; the
//! configuration table ("PCMP") follows it with one processor entry per vCPU (APIC ids 0..N-1, the BSP
//! flagged), the ISA bus, KVM's in-kernel IOAPIC (APIC id N), ISA IRQ i → IOAPIC pin i (what KVM's
//! default GSI routing does when the VMM installs none: the PIT's IRQ 0 reaches pin 0, COM1's IRQ 4
//! pin 4), and the local interrupts every LAPIC gets: LINT0 from the 8259 PIC (ExtINT), LINT1 as NMI.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::layout::{EBDA_END, EBDA_START, IOAPIC_ADDR, LAPIC_ADDR};

/// Size of the floating pointer structure.
const FLOATING_POINTER_LEN: usize = 16;
/// Size of the configuration table header.
const HEADER_LEN: usize = 44;
/// Size of a processor entry.
const PROCESSOR_LEN: usize = 20;
/// Size of every other entry (bus, IOAPIC, interrupt assignments).
const SMALL_ENTRY_LEN: usize = 8;
/// ISA interrupt lines routed through the IOAPIC.
const ISA_IRQS: u8 = 16;

const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IO_INTERRUPT: u8 = 3;
const ENTRY_LOCAL_INTERRUPT: u8 = 4;

const INTERRUPT_INT: u8 = 0;
const INTERRUPT_NMI: u8 = 1;
const INTERRUPT_EXTINT: u8 = 3;

/// MP specification revision 1.4.
const SPEC_REVISION: u8 = 4;
/// Version of an integrated xAPIC, as KVM's LAPIC reports it.
const LAPIC_VERSION: u8 = 0x14;
/// Version of the 82093AA IOAPIC KVM emulates.
const IOAPIC_VERSION: u8 = 0x11;
/// Processor entry flags.
const CPU_ENABLED: u8 = 1;
const CPU_BOOTSTRAP: u8 = 2;
/// CPU signature (family 6) and feature flags (FPU, APIC) of a processor entry.
const CPU_SIGNATURE: u32 = 0x600;
const CPU_FEATURES: u32 = (1 << 0) | (1 << 9);

/// The MP table could not describe or hold this machine.
#[derive(Debug, thiserror::Error)]
pub enum MpTableError {
    /// More vCPUs than the table fits in the EBDA.
    #[error("vcpus: {vcpus} do not fit in the MP table (at most {max})")]
    TooManyCpus { vcpus: u8, max: u8 },
    /// Guest memory refused the write.
    #[error("writing the MP table at {address:#x}: {source}")]
    Write { address: u64, source: vm_memory::GuestMemoryError },
}

/// The most vCPUs whose processor entries fit in the EBDA beside everything else.
pub const fn max_cpus() -> u8 {
    let fixed = FLOATING_POINTER_LEN + HEADER_LEN + SMALL_ENTRY_LEN * (2 + ISA_IRQS as usize + 2);
    let room = (EBDA_END.0 - EBDA_START.0) as usize - fixed;
    let fits = room / PROCESSOR_LEN;
    // APIC ids are one byte and the IOAPIC takes the id after the last CPU.
    if fits > 254 { 254 } else { fits as u8 }
}

/// The byte that makes `bytes` sum to zero modulo 256.
fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |sum, b| sum.wrapping_add(*b)).wrapping_neg()
}

/// Builds the configuration table (header and entries) for `vcpus` CPUs.
fn configuration_table(vcpus: u8) -> Vec<u8> {
    let ioapic_id = vcpus;
    let mut entries = Vec::new();
    for cpu in 0..vcpus {
        entries.push(ENTRY_PROCESSOR);
        entries.push(cpu);
        entries.push(LAPIC_VERSION);
        entries.push(CPU_ENABLED | if cpu == 0 { CPU_BOOTSTRAP } else { 0 });
        entries.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        entries.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        entries.extend_from_slice(&[0; 8]);
    }
    entries.extend_from_slice(&[ENTRY_BUS, 0]);
    entries.extend_from_slice(b"ISA   ");
    entries.extend_from_slice(&[ENTRY_IOAPIC, ioapic_id, IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&IOAPIC_ADDR.to_le_bytes());
    for irq in 0..ISA_IRQS {
        // Type, interrupt type, polarity/trigger "conforms to bus" (2 bytes), source bus, source IRQ,
        // destination IOAPIC, destination pin.
        entries.extend_from_slice(&[ENTRY_IO_INTERRUPT, INTERRUPT_INT, 0, 0, 0, irq, ioapic_id, irq]);
    }
    // Local interrupts go to every LAPIC (destination 0xff): LINT0 ExtINT, LINT1 NMI.
    entries.extend_from_slice(&[ENTRY_LOCAL_INTERRUPT, INTERRUPT_EXTINT, 0, 0, 0, 0, 0xff, 0]);
    entries.extend_from_slice(&[ENTRY_LOCAL_INTERRUPT, INTERRUPT_NMI, 0, 0, 0, 0, 0xff, 1]);
    let entry_count = u16::from(vcpus) + 2 + u16::from(ISA_IRQS) + 2;

    let length = (HEADER_LEN + entries.len()) as u16;
    let mut table = Vec::with_capacity(length as usize);
    table.extend_from_slice(b"PCMP");
    table.extend_from_slice(&length.to_le_bytes());
    table.push(SPEC_REVISION);
    table.push(0); // checksum, filled below
    table.extend_from_slice(b"BOXBENCH");
    table.extend_from_slice(b"MICROVM     ");
    table.extend_from_slice(&0u32.to_le_bytes()); // OEM table pointer
    table.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    table.extend_from_slice(&entry_count.to_le_bytes());
    table.extend_from_slice(&LAPIC_ADDR.to_le_bytes());
    table.extend_from_slice(&[0; 4]); // extended table length, checksum, reserved
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);
    table
}

/// Writes the floating pointer and configuration table for `vcpus` CPUs at the start of the EBDA.
pub fn write_mptable(mem: &GuestMemoryMmap, vcpus: u8) -> Result<(), MpTableError> {
    if vcpus == 0 || vcpus > max_cpus() {
        return Err(MpTableError::TooManyCpus { vcpus, max: max_cpus() });
    }
    let table_address = EBDA_START.0 + FLOATING_POINTER_LEN as u64;
    let mut pointer = Vec::with_capacity(FLOATING_POINTER_LEN);
    pointer.extend_from_slice(b"_MP_");
    pointer.extend_from_slice(&(table_address as u32).to_le_bytes());
    pointer.push(1); // length in 16-byte paragraphs
    pointer.push(SPEC_REVISION);
    pointer.push(0); // checksum, filled below
    pointer.extend_from_slice(&[0; 5]); // feature bytes: 0 = a configuration table is present
    pointer[10] = checksum(&pointer);

    let table = configuration_table(vcpus);
    for (address, bytes) in [(EBDA_START.0, &pointer), (table_address, &table)] {
        mem.write_slice(bytes, GuestAddress(address)).map_err(|source| MpTableError::Write { address, source })?;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The APIC ids and BSP flags of the processor entries of the MP table in `mem`, after checking
    /// both checksums.
    pub(crate) fn read_processors(mem: &GuestMemoryMmap) -> Vec<(u8, bool)> {
        let mut pointer = [0u8; FLOATING_POINTER_LEN];
        mem.read_slice(&mut pointer, EBDA_START).unwrap();
        assert_eq!(&pointer[..4], b"_MP_");
        assert_eq!(pointer.iter().fold(0u8, |s, b| s.wrapping_add(*b)), 0, "floating pointer checksum");
        let table_address = u32::from_le_bytes(pointer[4..8].try_into().unwrap()) as u64;
        let mut header = [0u8; HEADER_LEN];
        mem.read_slice(&mut header, GuestAddress(table_address)).unwrap();
        assert_eq!(&header[..4], b"PCMP");
        let length = u16::from_le_bytes([header[4], header[5]]) as usize;
        let mut table = vec![0u8; length];
        mem.read_slice(&mut table, GuestAddress(table_address)).unwrap();
        assert_eq!(table.iter().fold(0u8, |s, b| s.wrapping_add(*b)), 0, "configuration table checksum");
        let count = u16::from_le_bytes([header[34], header[35]]);
        let mut cpus = Vec::new();
        let mut at = HEADER_LEN;
        for _ in 0..count {
            match table[at] {
                ENTRY_PROCESSOR => {
                    cpus.push((table[at + 1], table[at + 3] & CPU_BOOTSTRAP != 0));
                    at += PROCESSOR_LEN;
                }
                _ => at += SMALL_ENTRY_LEN,
            }
        }
        assert_eq!(at, length, "entries fill the table exactly");
        cpus
    }

    #[test]
    fn one_processor_entry_per_vcpu_with_the_bsp_first() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        write_mptable(&mem, 3).unwrap();
        assert_eq!(read_processors(&mem), vec![(0, true), (1, false), (2, false)]);
    }

    #[test]
    fn too_many_vcpus_is_refused() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let err = write_mptable(&mem, max_cpus() + 1).unwrap_err();
        assert!(err.to_string().starts_with("vcpus: "), "{err}");
        write_mptable(&mem, max_cpus()).unwrap();
        assert_eq!(read_processors(&mem).len(), max_cpus() as usize);
    }
}
