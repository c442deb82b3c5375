//! Linux capabilities of the workload: their OCI names, the five sets a bundle's
//! `process.capabilities` lists, and OCI's default (what `crun spec` and `runc spec` write, which
//! boxbench applies when a bundle says nothing, and always with a plain rootfs).
//!
//! A set is a 64-bit mask, bit `n` for capability `n`, as capget(2) and `/proc/PID/status` show it.
//! The masks are checked here against the rules the kernel would otherwise refuse in the child:
//! effective within permitted, inheritable within bounding. Ambient capabilities the kernel cannot
//! raise (those not both permitted and inheritable) are left out, as crun and runc skip them.

/// The capabilities Linux knows, by number (the index), as OCI bundles name them.
const NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The bounding, effective and permitted capabilities of OCI's default process, as `crun spec`
/// (1.8.1) and `runc spec` write them.
pub const OCI_DEFAULT_NAMES: [&str; 3] = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"];

/// A capability name boxbench does not know, or sets the kernel would refuse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CapabilityError {
    /// Not a Linux capability name of the form `CAP_...`.
    #[error("unknown capability {0:?}")]
    Unknown(String),
    /// An effective capability that is not permitted.
    #[error("effective capability {0} is not in the permitted set")]
    EffectiveNotPermitted(&'static str),
    /// An inheritable capability outside the bounding set.
    #[error("inheritable capability {0} is not in the bounding set")]
    InheritableNotBounding(&'static str),
}

/// The mask of the capabilities `names` lists.
pub fn mask_of<S: AsRef<str>>(names: &[S]) -> Result<u64, CapabilityError> {
    names.iter().try_fold(0u64, |mask, name| {
        let name = name.as_ref();
        let number =
            NAMES.iter().position(|known| *known == name).ok_or_else(|| CapabilityError::Unknown(name.to_owned()))?;
        Ok(mask | 1 << number)
    })
}

/// The names of the capabilities in `mask`, in number order.
pub fn names_of(mask: u64) -> Vec<&'static str> {
    NAMES.iter().enumerate().filter(|(number, _)| mask & 1 << number != 0).map(|(_, name)| *name).collect()
}

/// The first capability of `mask` that `allowed` lacks.
fn first_outside(mask: u64, allowed: u64) -> Option<&'static str> {
    names_of(mask & !allowed).first().copied()
}

/// The workload's five capability sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapabilitySets {
    /// The bounding set: what the workload can ever gain (dropped with `PR_CAPBSET_DROP`).
    pub bounding: u64,
    /// The effective set.
    pub effective: u64,
    /// The permitted set.
    pub permitted: u64,
    /// The inheritable set.
    pub inheritable: u64,
    /// The ambient set, only capabilities both permitted and inheritable.
    pub ambient: u64,
}

impl CapabilitySets {
    /// OCI's default: [`OCI_DEFAULT_NAMES`] bounding, effective and permitted; nothing inheritable,
    /// nothing ambient.
    pub fn oci_default() -> Self {
        let mask = NAMES
            .iter()
            .enumerate()
            .filter(|(_, name)| OCI_DEFAULT_NAMES.contains(name))
            .fold(0u64, |mask, (number, _)| mask | 1 << number);
        Self { bounding: mask, effective: mask, permitted: mask, inheritable: 0, ambient: 0 }
    }

    /// The sets from their masks, checked as the kernel would check them; `ambient` keeps only
    /// what the kernel can raise.
    pub fn new(
        bounding: u64,
        effective: u64,
        permitted: u64,
        inheritable: u64,
        ambient: u64,
    ) -> Result<Self, CapabilityError> {
        if let Some(name) = first_outside(effective, permitted) {
            return Err(CapabilityError::EffectiveNotPermitted(name));
        }
        if let Some(name) = first_outside(inheritable, bounding) {
            return Err(CapabilityError::InheritableNotBounding(name));
        }
        Ok(Self { bounding, effective, permitted, inheritable, ambient: ambient & permitted & inheritable })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oci_default_mask_is_the_one_proc_status_shows() {
        let default = CapabilitySets::oci_default();
        // CAP_KILL (5), CAP_NET_BIND_SERVICE (10), CAP_AUDIT_WRITE (29).
        assert_eq!(default.bounding, 0x0000_0000_2000_0420);
        assert_eq!((default.effective, default.permitted), (default.bounding, default.bounding));
        assert_eq!((default.inheritable, default.ambient), (0, 0));
        assert_eq!(names_of(default.bounding), ["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_AUDIT_WRITE"]);
    }

    #[test]
    fn names_map_to_their_numbers_and_unknown_ones_are_named() {
        assert_eq!(mask_of(&["CAP_CHOWN"]), Ok(1));
        assert_eq!(mask_of(&["CAP_SYS_ADMIN", "CAP_SYS_ADMIN"]), Ok(1 << 21));
        assert_eq!(mask_of(&["CAP_CHECKPOINT_RESTORE"]), Ok(1 << 40));
        assert_eq!(mask_of::<&str>(&[]), Ok(0));
        assert_eq!(mask_of(&["CAP_KILL", "kill"]), Err(CapabilityError::Unknown("kill".into())));
        assert_eq!(mask_of(&["CAP_FLY"]).unwrap_err().to_string(), "unknown capability \"CAP_FLY\"");
        for (number, name) in NAMES.iter().enumerate() {
            assert_eq!(mask_of(&[name]), Ok(1 << number));
            assert_eq!(names_of(1 << number), [*name]);
        }
    }

    #[test]
    fn sets_the_kernel_would_refuse_are_named_and_ambient_is_trimmed() {
        let kill = mask_of(&["CAP_KILL"]).unwrap();
        let chown = mask_of(&["CAP_CHOWN"]).unwrap();
        assert_eq!(
            CapabilitySets::new(kill, kill | chown, kill, 0, 0),
            Err(CapabilityError::EffectiveNotPermitted("CAP_CHOWN"))
        );
        assert_eq!(
            CapabilitySets::new(kill, kill, kill, chown, 0),
            Err(CapabilityError::InheritableNotBounding("CAP_CHOWN"))
        );
        // What `crun spec` writes: ambient listed, inheritable empty, so nothing can be raised.
        let crun = CapabilitySets::new(kill, kill, kill, 0, kill).unwrap();
        assert_eq!(crun.ambient, 0);
        let raised = CapabilitySets::new(kill | chown, kill, kill | chown, kill | chown, kill | chown).unwrap();
        assert_eq!(raised.ambient, kill | chown);
    }
}
