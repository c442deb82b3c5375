//! Tiny hand-assembled guests packed as a bzImage and as an ELF with a PVH note, for tests that must
//! not wait for (or depend on) boxbench's real guest. Their code runs unchanged in 32-bit protected
//! mode and in 64-bit mode: it prints a message, writes the boot timer, prints the marker and resets
//! the machine through the i8042 — or spins, or triple-faults. Also the newc initrds they are handed
//! (the VMM refuses an initrd that is no initramfs).

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// Guest-physical load address of the flat image.
pub const LOAD: u32 = 0x10_0000;
/// Offset of the 64-bit entry in the flat image (the PVH entry is at 0).
const ENTRY64: usize = 0x200;
/// Offset of the message the guest prints.
const MESSAGE: usize = 0x400;
/// Size of the flat image.
const IMAGE: usize = 0x1000;

/// What the tiny guest does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Prints "tiny guest", writes the boot timer, prints the marker, resets via the i8042.
    Reboot,
    /// Prints "tiny guest", then spins with interrupts off.
    Spin,
    /// Prints "tiny guest", then executes ud2 with an IDT that cannot deliver it: triple fault.
    TripleFault,
    /// Prints "tiny guest", then executes `fwait`, which kvm_pvm's instruction emulator lacks (KVM
    /// reports an emulation failure there), then spins.
    Fwait,
}

fn code(behaviour: Behaviour) -> Vec<u8> {
    let mut c = Vec::new();
    c.extend_from_slice(&[0x66, 0xba, 0xf8, 0x03]); // mov dx, 0x3f8
    c.push(0xbe); // mov esi, imm32 (zero-extended to rsi in 64-bit mode)
    c.extend_from_slice(&(LOAD + MESSAGE as u32).to_le_bytes());
    // print: lodsb; test al, al; jz +3; out dx, al; jmp print
    c.extend_from_slice(&[0xac, 0x84, 0xc0, 0x74, 0x03, 0xee, 0xeb, 0xf8]);
    match behaviour {
        Behaviour::Reboot => {
            c.push(0xb8); // mov eax, 0xd0000000
            c.extend_from_slice(&0xd000_0000u32.to_le_bytes());
            c.extend_from_slice(&[0xc6, 0x00, 0x7b]); // mov byte [rax], 123
            // print the marker: the message continues after its NUL
            c.extend_from_slice(&[0xac, 0x84, 0xc0, 0x74, 0x03, 0xee, 0xeb, 0xf8]);
            c.extend_from_slice(&[0xb0, 0xfe, 0xe6, 0x64]); // mov al, 0xfe; out 0x64, al
            c.extend_from_slice(&[0xf4, 0xeb, 0xfd]); // hlt; jmp hlt
        }
        Behaviour::Spin => c.extend_from_slice(&[0xfa, 0xeb, 0xfe]), // cli; jmp $
        Behaviour::TripleFault => c.extend_from_slice(&[0x0f, 0x0b]), // ud2
        Behaviour::Fwait => c.extend_from_slice(&[0x9b, 0xfa, 0xeb, 0xfe]), // fwait; cli; jmp $
    }
    c
}

/// The flat image: the same code at the PVH entry (0) and the 64-bit entry (0x200).
pub fn flat_image(behaviour: Behaviour) -> Vec<u8> {
    let mut image = vec![0u8; IMAGE];
    let message = b"tiny guest\n\0BOXBENCH_READY\n\0";
    let code = code(behaviour);
    image[..code.len()].copy_from_slice(&code);
    image[ENTRY64..ENTRY64 + code.len()].copy_from_slice(&code);
    image[MESSAGE..MESSAGE + message.len()].copy_from_slice(message);
    image
}

/// The flat image behind a Linux boot protocol 2.15 setup header.
pub fn bzimage(behaviour: Behaviour) -> Vec<u8> {
    let payload = flat_image(behaviour);
    let setup_sects = 1u8;
    let mut file = vec![0u8; (setup_sects as usize + 1) * 512];
    let put = |file: &mut Vec<u8>, at: usize, bytes: &[u8]| file[at..at + bytes.len()].copy_from_slice(bytes);
    put(&mut file, 0x1f1, &[setup_sects]);
    put(&mut file, 0x1f4, &((payload.len() / 16) as u32).to_le_bytes());
    put(&mut file, 0x1fe, &0xaa55u16.to_le_bytes());
    put(&mut file, 0x202, b"HdrS");
    put(&mut file, 0x206, &0x020fu16.to_le_bytes());
    put(&mut file, 0x211, &[0x01]); // LOADED_HIGH
    put(&mut file, 0x214, &LOAD.to_le_bytes()); // code32_start
    put(&mut file, 0x230, &0x20_0000u32.to_le_bytes()); // kernel_alignment
    put(&mut file, 0x236, &0x0001u16.to_le_bytes()); // XLF_KERNEL_64
    put(&mut file, 0x238, &2047u32.to_le_bytes()); // cmdline_size
    put(&mut file, 0x258, &u64::from(LOAD).to_le_bytes()); // pref_address
    put(&mut file, 0x260, &0x10_0000u32.to_le_bytes()); // init_size: 1 MiB
    file.extend_from_slice(&payload);
    file
}

/// The flat image as an x86-64 ELF: one PT_LOAD at 1 MiB, e_entry at the 64-bit entry, and (with
/// `pvh_note`) a Xen PHYS32_ENTRY note giving the 32-bit entry.
pub fn elf(behaviour: Behaviour, pvh_note: bool) -> Vec<u8> {
    let payload = flat_image(behaviour);
    let phnum: u16 = if pvh_note { 2 } else { 1 };
    let note_offset = 0x100usize;
    let payload_offset = 0x1000usize;
    let mut file = vec![0u8; payload_offset];
    let put = |file: &mut Vec<u8>, at: usize, bytes: &[u8]| file[at..at + bytes.len()].copy_from_slice(bytes);
    put(&mut file, 0, b"\x7fELF");
    put(&mut file, 4, &[2, 1, 1]); // 64-bit, little endian, version 1
    put(&mut file, 16, &2u16.to_le_bytes()); // ET_EXEC
    put(&mut file, 18, &62u16.to_le_bytes()); // EM_X86_64
    put(&mut file, 20, &1u32.to_le_bytes());
    put(&mut file, 24, &u64::from(LOAD + ENTRY64 as u32).to_le_bytes()); // e_entry
    put(&mut file, 32, &64u64.to_le_bytes()); // e_phoff
    put(&mut file, 52, &64u16.to_le_bytes()); // e_ehsize
    put(&mut file, 54, &56u16.to_le_bytes()); // e_phentsize
    put(&mut file, 56, &phnum.to_le_bytes());
    // PT_LOAD
    let ph = 64;
    put(&mut file, ph, &1u32.to_le_bytes());
    put(&mut file, ph + 4, &5u32.to_le_bytes()); // R+X
    put(&mut file, ph + 8, &(payload_offset as u64).to_le_bytes());
    put(&mut file, ph + 16, &u64::from(LOAD).to_le_bytes());
    put(&mut file, ph + 24, &u64::from(LOAD).to_le_bytes());
    put(&mut file, ph + 32, &(payload.len() as u64).to_le_bytes());
    put(&mut file, ph + 40, &(payload.len() as u64).to_le_bytes());
    put(&mut file, ph + 48, &0x1000u64.to_le_bytes());
    if pvh_note {
        let ph = 64 + 56;
        let note_len = 12 + 4 + 4;
        put(&mut file, ph, &4u32.to_le_bytes()); // PT_NOTE
        put(&mut file, ph + 8, &(note_offset as u64).to_le_bytes());
        put(&mut file, ph + 32, &(note_len as u64).to_le_bytes());
        put(&mut file, ph + 40, &(note_len as u64).to_le_bytes());
        put(&mut file, ph + 48, &4u64.to_le_bytes());
        put(&mut file, note_offset, &4u32.to_le_bytes()); // namesz
        put(&mut file, note_offset + 4, &4u32.to_le_bytes()); // descsz
        put(&mut file, note_offset + 8, &18u32.to_le_bytes()); // XEN_ELFNOTE_PHYS32_ENTRY
        put(&mut file, note_offset + 12, b"Xen\0");
        put(&mut file, note_offset + 16, &LOAD.to_le_bytes());
    }
    file.extend_from_slice(&payload);
    file
}

/// Writes `bytes` to `name` in `dir` and returns the path.
pub fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A newc cpio archive (what the VMM accepts as an initrd) of one regular file `name` holding `data`,
/// with its `TRAILER!!!` entry.
pub fn newc_initrd(name: &str, data: &[u8]) -> Vec<u8> {
    boxbench_images::cpio::archive_of_files(&[(name, 0o644, data)]).unwrap()
}

/// The pids of this test process's children (a VMM child not reaped shows here).
pub fn children_of_this_process() -> Vec<String> {
    let mut children = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let text = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        children.extend(text.split_whitespace().map(str::to_owned));
    }
    children
}

/// Instance cgroups of the micro-VM backend made by this test process and still there.
pub fn our_leftover_cgroups() -> Vec<PathBuf> {
    let prefix = format!("microvm-{}-", std::process::id());
    boxbench_core::cgroup::CgroupHost::detect()
        .map(|host| host.leftover_instances())
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&prefix)))
        .collect()
}

/// No VMM child and no instance cgroup of this test process is left (launches must be serialised).
pub fn assert_nothing_left_behind() {
    assert_eq!(children_of_this_process(), Vec::<String>::new(), "VMM child left behind");
    assert_eq!(our_leftover_cgroups(), Vec::<PathBuf>::new(), "instance cgroup left behind");
}

/// KVM tests can run here, or why not (for `boxbench_testkit::require!`).
pub fn kvm_available() -> Result<(), String> {
    if !Path::new("/dev/kvm").exists() {
        return Err("no /dev/kvm".into());
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map(drop)
        .map_err(|e| format!("/dev/kvm not accessible: {e}"))
}

/// Launcher tests (KVM and a per-instance cgroup) can run here, or why not.
pub fn launcher_available() -> Result<(), String> {
    kvm_available()?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not root (the per-instance cgroup needs it)".into());
    }
    Ok(())
}
