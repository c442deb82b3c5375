//! The x87/SSE state every vCPU starts with: what FNINIT and the SSE reset leave, which a kernel that
//! never went through a BIOS expects.

use kvm_bindings::kvm_fpu;

/// x87 control word after FNINIT: all exceptions masked, 64-bit precision, round to nearest.
const FCW_DEFAULT: u16 = 0x37f;
/// MXCSR after reset: all SIMD exceptions masked.
const MXCSR_DEFAULT: u32 = 0x1f80;

/// The initial FPU state.
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu { fcw: FCW_DEFAULT, mxcsr: MXCSR_DEFAULT, ..Default::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_exceptions() {
        let fpu = boot_fpu();
        assert_eq!((fpu.fcw, fpu.mxcsr), (0x37f, 0x1f80));
    }
}
