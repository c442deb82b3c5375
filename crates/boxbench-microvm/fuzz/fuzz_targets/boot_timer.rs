//! Fuzzes the boot-timer register: arbitrary sequences of writes at any offset, of any length and
//! content. Checks that exactly the 8-bit writes of the magic value at offset 0 are stamped.

#![no_main]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arbitrary::Arbitrary;
use boxbench_core::MonotonicNs;
use boxbench_microvm::VmObserver;
use boxbench_microvm::devices::boot_timer::BootTimer;
use boxbench_microvm::layout::BOOT_TIMER_MAGIC;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Write {
    offset: u64,
    data: Vec<u8>,
}

#[derive(Debug, Default)]
struct Stamps(AtomicU64);

impl VmObserver for Stamps {
    fn boot_timer(&self, _at: MonotonicNs) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

fuzz_target!(|writes: Vec<Write>| {
    let stamps = Arc::new(Stamps::default());
    let timer = BootTimer::new(stamps.clone());
    let mut expected = 0;
    for write in writes {
        // Offsets inside the register window are the interesting ones; fold most of them into it.
        let offset = if write.offset & 1 == 0 { (write.offset >> 1) % 0x1000 } else { write.offset };
        timer.write(offset, &write.data);
        if offset == 0 && write.data == [BOOT_TIMER_MAGIC] {
            expected += 1;
        }
    }
    assert_eq!(stamps.0.load(Ordering::Relaxed), expected);
});
