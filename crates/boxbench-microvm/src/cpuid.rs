//! The CPUID each vCPU reports: what KVM supports on this host, with the per-CPU and per-host fixes a
//! guest needs.
//!
//! KVM_GET_SUPPORTED_CPUID describes the host CPU as KVM can virtualise it, but not which vCPU is
//! asking: the VMM writes each vCPU's APIC id into the leaves that carry it (1, 0xb, 0x1f), sets the
//! "running under a hypervisor" bit, and on kvm_pvm hides the two paravirtual features that make a
//! guest kernel patch its own code at run time (steal time, stable kvmclock), which kvm_pvm's
//! instruction emulator cannot follow.

use kvm_bindings::CpuId;

/// Leaf 1: family/model/features; EBX[31:24] = initial APIC id, EBX[23:16] = logical CPUs.
const LEAF_FEATURES: u32 = 0x1;
/// Leaf 0xb: extended topology; EDX = x2APIC id.
const LEAF_TOPOLOGY: u32 = 0xb;
/// Leaf 0x1f: V2 extended topology; EDX = x2APIC id.
const LEAF_TOPOLOGY_V2: u32 = 0x1f;
/// Leaf 0x40000001: KVM paravirtual features in EAX.
const LEAF_KVM_FEATURES: u32 = 0x4000_0001;

/// Leaf 1 ECX bit 31: a hypervisor is present.
const ECX_HYPERVISOR: u32 = 1 << 31;
/// Leaf 1 EDX bit 28: EBX[23:16] holds a valid logical CPU count.
const EDX_HTT: u32 = 1 << 28;
/// KVM_FEATURE_STEAL_TIME.
const KVM_FEATURE_STEAL_TIME: u32 = 1 << 5;
/// KVM_FEATURE_CLOCKSOURCE_STABLE_BIT.
const KVM_FEATURE_CLOCKSOURCE_STABLE: u32 = 1 << 24;

/// Host-specific CPUID adjustments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuidQuirks {
    /// Clear KVM steal time and the stable-kvmclock bit (kvm_pvm hosts).
    pub hide_pv_clock_features: bool,
}

/// Adjusts `cpuid` (as KVM_GET_SUPPORTED_CPUID returned it) for vCPU `apic_id` of `vcpus`.
pub fn adjust_for_vcpu(cpuid: &mut CpuId, apic_id: u8, vcpus: u8, quirks: CpuidQuirks) {
    for entry in cpuid.as_mut_slice() {
        match entry.function {
            LEAF_FEATURES => {
                entry.ebx = (entry.ebx & 0x0000_ffff) | (u32::from(apic_id) << 24) | (u32::from(vcpus) << 16);
                entry.ecx |= ECX_HYPERVISOR;
                if vcpus > 1 {
                    entry.edx |= EDX_HTT;
                }
            }
            LEAF_TOPOLOGY | LEAF_TOPOLOGY_V2 => entry.edx = u32::from(apic_id),
            LEAF_KVM_FEATURES if quirks.hide_pv_clock_features => {
                entry.eax &= !(KVM_FEATURE_STEAL_TIME | KVM_FEATURE_CLOCKSOURCE_STABLE);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::kvm_cpuid_entry2;

    fn entry(function: u32, eax: u32, ebx: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 { function, eax, ebx, ..Default::default() }
    }

    #[test]
    fn apic_id_hypervisor_bit_and_pvm_quirk() {
        let mut cpuid = CpuId::from_entries(&[
            entry(LEAF_FEATURES, 0x806c1, 0xffff_0800),
            entry(LEAF_TOPOLOGY, 0, 0),
            entry(LEAF_KVM_FEATURES, 0x0100_7fff, 0),
        ])
        .unwrap();
        adjust_for_vcpu(&mut cpuid, 3, 4, CpuidQuirks { hide_pv_clock_features: true });
        let e = cpuid.as_slice();
        assert_eq!(e[0].ebx >> 24, 3);
        assert_eq!((e[0].ebx >> 16) & 0xff, 4);
        assert_eq!(e[0].ebx & 0xffff, 0x0800, "brand index and CLFLUSH size kept");
        assert_ne!(e[0].ecx & ECX_HYPERVISOR, 0);
        assert_eq!(e[1].edx, 3);
        assert_eq!(e[2].eax & (1 << 5), 0);
        assert_eq!(e[2].eax & (1 << 24), 0);
        assert_eq!(e[2].eax & 1, 1, "other PV features kept");
    }

    #[test]
    fn pv_clock_features_stay_without_the_quirk() {
        let mut cpuid = CpuId::from_entries(&[entry(LEAF_KVM_FEATURES, 0x0100_0020, 0)]).unwrap();
        adjust_for_vcpu(&mut cpuid, 0, 1, CpuidQuirks::default());
        assert_eq!(cpuid.as_slice()[0].eax, 0x0100_0020);
    }
}
