//! The namespaces a container gets: which ones, as OCI names them, and the clone(2) flags that
//! create them all at once with the container's init.

use nix::sched::CloneFlags;

/// A namespace boxbench cannot give a container, or a set it cannot work with.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NamespaceError {
    /// An OCI namespace type boxbench does not create (user, cgroup, time) or does not know.
    #[error("namespace type \"{0}\" is not supported (supported: pid, network, ipc, uts, mount)")]
    UnsupportedType(String),
    /// The same namespace listed twice.
    #[error("namespace type \"{0}\" is listed twice")]
    Duplicate(String),
    /// No mount namespace: the container's mounts and pivot_root would change the host's.
    #[error("a mount namespace is required: without one the container's mounts would land on the host")]
    MountRequired,
    /// A hostname without a UTS namespace would rename the host.
    #[error("setting a hostname requires a uts namespace: without one it would rename the host")]
    HostnameWithoutUts,
}

/// One namespace kind boxbench creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Namespace {
    /// Process IDs: the workload is PID 1.
    Pid,
    /// Network: only a loopback interface.
    Network,
    /// System V IPC and POSIX message queues.
    Ipc,
    /// Hostname and domain name.
    Uts,
    /// The mount table.
    Mount,
}

impl Namespace {
    /// Every kind, in the order OCI bundles usually list them.
    pub const ALL: [Namespace; 5] =
        [Namespace::Pid, Namespace::Network, Namespace::Ipc, Namespace::Uts, Namespace::Mount];

    /// The kind called `name` in an OCI bundle's `linux.namespaces[].type`.
    pub fn from_oci(name: &str) -> Result<Self, NamespaceError> {
        Namespace::ALL
            .into_iter()
            .find(|ns| ns.oci_name() == name)
            .ok_or_else(|| NamespaceError::UnsupportedType(name.to_owned()))
    }

    /// The OCI name of the kind.
    pub fn oci_name(self) -> &'static str {
        match self {
            Namespace::Pid => "pid",
            Namespace::Network => "network",
            Namespace::Ipc => "ipc",
            Namespace::Uts => "uts",
            Namespace::Mount => "mount",
        }
    }

    fn clone_flag(self) -> CloneFlags {
        match self {
            Namespace::Pid => CloneFlags::CLONE_NEWPID,
            Namespace::Network => CloneFlags::CLONE_NEWNET,
            Namespace::Ipc => CloneFlags::CLONE_NEWIPC,
            Namespace::Uts => CloneFlags::CLONE_NEWUTS,
            Namespace::Mount => CloneFlags::CLONE_NEWNS,
        }
    }
}

/// The namespaces of one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceSet {
    kinds: Vec<Namespace>,
}

impl NamespaceSet {
    /// All five: what a container gets when no bundle says otherwise.
    pub fn all() -> Self {
        Self { kinds: Namespace::ALL.to_vec() }
    }

    /// The set of the given kinds, which must include a mount namespace and list none twice.
    pub fn new(kinds: Vec<Namespace>) -> Result<Self, NamespaceError> {
        for (i, kind) in kinds.iter().enumerate() {
            if kinds[..i].contains(kind) {
                return Err(NamespaceError::Duplicate(kind.oci_name().to_owned()));
            }
        }
        if !kinds.contains(&Namespace::Mount) {
            return Err(NamespaceError::MountRequired);
        }
        Ok(Self { kinds })
    }

    /// True if the set has `kind`.
    pub fn contains(&self, kind: Namespace) -> bool {
        self.kinds.contains(&kind)
    }

    /// Checks that a hostname can be set without touching the host's.
    pub fn check_hostname(&self) -> Result<(), NamespaceError> {
        if self.contains(Namespace::Uts) { Ok(()) } else { Err(NamespaceError::HostnameWithoutUts) }
    }

    /// The clone(2) flags that create every namespace of the set.
    pub fn clone_flags(&self) -> CloneFlags {
        self.kinds.iter().fold(CloneFlags::empty(), |flags, kind| flags | kind.clone_flag())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_five_map_to_their_clone_flags() {
        let flags = NamespaceSet::all().clone_flags();
        let expected = CloneFlags::CLONE_NEWPID
            | CloneFlags::CLONE_NEWNET
            | CloneFlags::CLONE_NEWIPC
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWNS;
        assert_eq!(flags, expected);
    }

    #[test]
    fn oci_names_round_trip_and_unknown_ones_are_named() {
        for ns in Namespace::ALL {
            assert_eq!(Namespace::from_oci(ns.oci_name()), Ok(ns));
        }
        let err = Namespace::from_oci("user").unwrap_err();
        assert!(err.to_string().contains("\"user\""), "{err}");
    }

    #[test]
    fn a_mount_namespace_is_required_and_duplicates_refused() {
        assert_eq!(NamespaceSet::new(vec![Namespace::Pid]), Err(NamespaceError::MountRequired));
        assert_eq!(
            NamespaceSet::new(vec![Namespace::Mount, Namespace::Mount]),
            Err(NamespaceError::Duplicate("mount".into()))
        );
        let no_uts = NamespaceSet::new(vec![Namespace::Mount, Namespace::Pid]).unwrap();
        assert_eq!(no_uts.check_hostname(), Err(NamespaceError::HostnameWithoutUts));
        assert_eq!(no_uts.clone_flags(), CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWPID);
    }
}
