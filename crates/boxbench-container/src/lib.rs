//! boxbench's own namespace container launcher, the `container` backend.
//!
//! One clone(2) creates the PID, mount, UTS, IPC and network namespaces (and a user namespace,
//! whose mappings the parent writes, when a bundle asks) with the container's init in them as PID
//! 1; the init first joins the instance's cgroups (then unshares a cgroup namespace if asked and
//! sets its rlimits further on), then builds its filesystem
//! (private propagation, the rootfs bound onto itself, proc, sysfs, a minimal `/dev`,
//! `pivot_root`, OCI's masked and read-only paths), sets its hostname, descriptors, ids,
//! capabilities (OCI's default set unless a bundle lists others), `no_new_privs` and a bundle's
//! seccomp filters, and executes
//! the workload, whose stdout and stderr are the console. The steps are laid out like youki's
//! libcontainer, one module each: [`namespaces`] (with a user namespace's id mappings), [`rootfs`],
//! [`capabilities`], [`resources`] (cpu and pids cgroups), [`seccomp`] (a profile compiled to BPF),
//! [`bundle`] (OCI's `config.json`, read with `oci-spec`, everything `runc spec` writes), [`process`]
//! (clone, handshake, wait) and [`launcher`] ([`ContainerLauncher`]); the system calls themselves go
//! through [`syscalls::Syscalls`] so the setup's order is testable without root.

pub mod bundle;
pub mod capabilities;
pub mod launcher;
pub mod namespaces;
pub mod process;
pub mod resources;
pub mod rootfs;
pub mod seccomp;
pub mod syscalls;

pub use bundle::{Bundle, BundleError};
pub use capabilities::{CapabilityError, CapabilitySets};
pub use launcher::{BACKEND, ContainerError, ContainerInstance, ContainerLauncher};
pub use namespaces::NamespaceError;
pub use process::ProcessError;
pub use resources::ResourceError;
pub use rootfs::RootfsError;
