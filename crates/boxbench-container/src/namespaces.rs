//! The namespaces a container gets: which ones, as OCI names them, the clone(2) flags that create
//! them with the container's init, and a user namespace's id mappings (`/proc/PID/uid_map`).
//!
//! A cgroup namespace is not made by the clone: the init first joins the instance's cgroup and
//! then unshares it, so the namespace's root is the instance cgroup (as runc and crun do it).

use nix::sched::CloneFlags;

/// A namespace boxbench cannot give a container, or a set it cannot work with.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NamespaceError {
    /// An OCI namespace type boxbench does not create (time) or does not know.
    #[error("namespace type \"{0}\" is not supported (supported: pid, network, ipc, uts, mount, user, cgroup)")]
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
    /// User and group ids, mapped from the host's by `uidMappings`/`gidMappings`.
    User,
    /// The cgroup tree's root, the instance cgroup once unshared.
    Cgroup,
}

impl Namespace {
    /// The five a container gets when no bundle says otherwise, in the order OCI bundles list them.
    pub const DEFAULT: [Namespace; 5] =
        [Namespace::Pid, Namespace::Network, Namespace::Ipc, Namespace::Uts, Namespace::Mount];

    /// Every kind boxbench creates.
    pub const ALL: [Namespace; 7] = [
        Namespace::Pid,
        Namespace::Network,
        Namespace::Ipc,
        Namespace::Uts,
        Namespace::Mount,
        Namespace::User,
        Namespace::Cgroup,
    ];

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
            Namespace::User => "user",
            Namespace::Cgroup => "cgroup",
        }
    }

    fn clone_flag(self) -> CloneFlags {
        match self {
            Namespace::Pid => CloneFlags::CLONE_NEWPID,
            Namespace::Network => CloneFlags::CLONE_NEWNET,
            Namespace::Ipc => CloneFlags::CLONE_NEWIPC,
            Namespace::Uts => CloneFlags::CLONE_NEWUTS,
            Namespace::Mount => CloneFlags::CLONE_NEWNS,
            Namespace::User => CloneFlags::CLONE_NEWUSER,
            // Unshared by the init after it joined its cgroup, never at the clone.
            Namespace::Cgroup => CloneFlags::empty(),
        }
    }
}

/// The namespaces of one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceSet {
    kinds: Vec<Namespace>,
}

impl NamespaceSet {
    /// The default five: what a container gets when no bundle says otherwise.
    pub fn all() -> Self {
        Self { kinds: Namespace::DEFAULT.to_vec() }
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

    /// The clone(2) flags that create the set's namespaces (all but cgroup, which the init unshares).
    pub fn clone_flags(&self) -> CloneFlags {
        self.kinds.iter().fold(CloneFlags::empty(), |flags, kind| flags | kind.clone_flag())
    }
}

/// One line of a user namespace's `uid_map` or `gid_map`: `size` ids from `container_id` inside
/// are `host_id` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMap {
    /// The first id inside the namespace.
    pub container_id: u32,
    /// The host id it is.
    pub host_id: u32,
    /// How many consecutive ids.
    pub size: u32,
}

/// The text written to `/proc/PID/uid_map` (or `gid_map`), one mapping a line.
pub fn map_text(maps: &[IdMap]) -> String {
    maps.iter().map(|m| format!("{} {} {}\n", m.container_id, m.host_id, m.size)).collect()
}

/// A user namespace's uid and gid mappings, written by the parent before the init goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdMappings {
    /// `linux.uidMappings`.
    pub uids: Vec<IdMap>,
    /// `linux.gidMappings`.
    pub gids: Vec<IdMap>,
}

impl IdMappings {
    /// Whether container `uid` and `gid` are mapped, so that the init can become them.
    pub fn maps(&self, uid: u32, gid: u32) -> bool {
        let inside = |maps: &[IdMap], id: u32| {
            maps.iter().any(|m| id >= m.container_id && u64::from(id) < u64::from(m.container_id) + u64::from(m.size))
        };
        inside(&self.uids, uid) && inside(&self.gids, gid)
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
        let err = Namespace::from_oci("time").unwrap_err();
        assert!(err.to_string().contains("\"time\""), "{err}");
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

#[cfg(test)]
mod id_map_tests {
    use super::*;

    #[test]
    fn user_joins_the_clone_and_cgroup_does_not() {
        let set = NamespaceSet::new(vec![Namespace::Mount, Namespace::User, Namespace::Cgroup]).unwrap();
        assert_eq!(set.clone_flags(), CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUSER);
        assert!(set.contains(Namespace::Cgroup));
    }

    #[test]
    fn maps_are_written_a_line_each_and_checked_for_the_process_ids() {
        let maps = IdMappings {
            uids: vec![
                IdMap { container_id: 0, host_id: 1000, size: 1 },
                IdMap { container_id: 1, host_id: 100000, size: 65536 },
            ],
            gids: vec![IdMap { container_id: 0, host_id: 1000, size: 1 }],
        };
        assert_eq!(map_text(&maps.uids), "0 1000 1\n1 100000 65536\n");
        assert!(maps.maps(0, 0));
        assert!(maps.maps(65536, 0));
        assert!(!maps.maps(65537, 0));
        assert!(!maps.maps(0, 1));
    }
}
