//! The boot-timer MMIO register at 0xd0000000: an 8-bit write of 123 (Firecracker's magic value)
//! timestamps the moment the guest reaches its userspace (`userspace_ms`).
//!
//! Any other access is ignored; a later write is stamped too (a guest may report several stages),
//! which the observer receives in order.

use std::sync::Arc;

use boxbench_core::MonotonicNs;

use crate::layout::BOOT_TIMER_MAGIC;
use crate::observer::VmObserver;

/// The boot timer.
#[derive(Debug)]
pub struct BootTimer {
    observer: Arc<dyn VmObserver>,
}

impl BootTimer {
    /// A boot timer reporting to `observer`.
    pub fn new(observer: Arc<dyn VmObserver>) -> Self {
        Self { observer }
    }

    /// A guest write of `data` at `offset` into the register window.
    pub fn write(&self, offset: u64, data: &[u8]) {
        if offset == 0 && data == [BOOT_TIMER_MAGIC] {
            self.observer.boot_timer(MonotonicNs::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Debug, Default)]
    struct Stamps(Mutex<Vec<MonotonicNs>>);
    impl VmObserver for Stamps {
        fn boot_timer(&self, at: MonotonicNs) {
            self.0.lock().unwrap().push(at);
        }
    }

    #[test]
    fn only_an_8_bit_write_of_the_magic_is_stamped() {
        let stamps = Arc::new(Stamps::default());
        let timer = BootTimer::new(stamps.clone());
        timer.write(0, &[122]);
        timer.write(0, &[123, 0, 0, 0]);
        timer.write(4, &[123]);
        assert!(stamps.0.lock().unwrap().is_empty());
        timer.write(0, &[123]);
        assert_eq!(stamps.0.lock().unwrap().len(), 1);
    }
}
