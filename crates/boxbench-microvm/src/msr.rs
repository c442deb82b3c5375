//! The model-specific registers a vCPU starts with.
//!
//! A BIOS would leave the SYSCALL/SYSENTER MSRs cleared, the TSC at zero, fast string operations on and
//! the MTRRs enabled with write-back as the default memory type; a directly booted kernel finds no
//! BIOS, so the VMM sets them. Without the MTRR default, a guest that reads the MTRRs would treat all
//! of RAM as uncacheable.

use kvm_bindings::{Msrs, kvm_msr_entry};

const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;

/// IA32_MISC_ENABLE bit 0: fast string operations.
const MISC_ENABLE_FAST_STRING: u64 = 1;
/// MTRRdefType: MTRRs enabled (bit 11), default type write-back (6).
const MTRR_ENABLED_WRITE_BACK: u64 = (1 << 11) | 6;

/// The boot MSR list could not be built.
#[derive(Debug, thiserror::Error)]
#[error("building the boot MSR list: {0:?}")]
pub struct MsrError(vmm_sys_util::fam::Error);

/// The MSRs and values every vCPU starts with.
pub fn boot_msrs() -> Result<Msrs, MsrError> {
    let entry = |index, data| kvm_msr_entry { index, data, ..Default::default() };
    Msrs::from_entries(&[
        entry(MSR_IA32_SYSENTER_CS, 0),
        entry(MSR_IA32_SYSENTER_ESP, 0),
        entry(MSR_IA32_SYSENTER_EIP, 0),
        entry(MSR_STAR, 0),
        entry(MSR_CSTAR, 0),
        entry(MSR_KERNEL_GS_BASE, 0),
        entry(MSR_SYSCALL_MASK, 0),
        entry(MSR_LSTAR, 0),
        entry(MSR_IA32_TSC, 0),
        entry(MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        entry(MSR_MTRR_DEF_TYPE, MTRR_ENABLED_WRITE_BACK),
    ])
    .map_err(MsrError)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mtrrs_default_to_write_back() {
        let msrs = boot_msrs().unwrap();
        let def = msrs.as_slice().iter().find(|e| e.index == MSR_MTRR_DEF_TYPE).unwrap();
        assert_eq!(def.data, 0x806);
        assert_eq!(msrs.as_slice().len(), 11);
    }
}
