/*
 * boxbench-guest: reads the boot protocol it was handed (PVH hvm_start_info or
 * Linux boot_params), counts and starts the CPUs of the MP table, checksums the
 * initrd and reports all of it on the serial port, then reboots through the
 * i8042 controller. The report format is the contract with boxbench's VMM
 * (notes/vmm-guest-contract.md) and with GuestReport::parse in the
 * boxbench-guest crate.
 *
 * Runs in long mode on the page tables of entry.S (identity map of 4 GiB),
 * interrupts off. CPU exceptions in kernel mode are reported and end in a
 * reboot.
 *
 * Everything that only reads and writes memory (boot protocol, command line,
 * MP table, initrd CRC) runs in one pass in user mode (CPL 3, user_call() in
 * entry.S): on a kvm_pvm host guest kernel code goes through KVM's instruction
 * emulator at a few microseconds per instruction (a CRC of 1 MiB took 30 s),
 * while guest user code runs natively. Kernel mode keeps what needs privilege:
 * port I/O, the boot timer, the local APIC, the AP start-up, the reboot.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "crc32_table.h"

#define BOOT_PVH 1
#define BOOT_LINUX32 2
#define BOOT_LINUX64 3

#define IDENTITY_MAP_END 0x100000000ull

#define SERIAL_PORT 0x3f8
#define SERIAL_IIR (SERIAL_PORT + 2)
#define SERIAL_FCR (SERIAL_PORT + 2)
#define SERIAL_LSR (SERIAL_PORT + 5)
#define SERIAL_LSR_THR_EMPTY 0x20
#define SERIAL_FCR_FIFO_ENABLE 0x01
#define SERIAL_IIR_FIFO_ENABLED 0xc0
#define SERIAL_FIFO_SIZE 16

#define BOOT_TIMER_ADDR 0xd0000000ull
#define BOOT_TIMER_VALUE 123

#define I8042_COMMAND 0x64
#define I8042_PULSE_RESET 0xfe
#define RESET_CONTROL_PORT 0xcf9
#define RESET_CONTROL_RESET 0x06

#define CMDLINE_MAX 4096
#define REPORT_MAX 8192
#define NOTE_MAX 256
#define MEMMAP_MAX 128
#define CPUS_MAX 64

#define E820_RAM 1

/* PVH: struct hvm_start_info and its tables (xen/include/public/arch-x86/hvm/start_info.h). */
#define PVH_MAGIC 0x336ec578
#define PVH_VERSION 0x04
#define PVH_NR_MODULES 0x0c
#define PVH_MODLIST_PADDR 0x10
#define PVH_CMDLINE_PADDR 0x18
#define PVH_MEMMAP_PADDR 0x28
#define PVH_MEMMAP_ENTRIES 0x30
#define PVH_START_INFO_V1_SIZE 0x38
#define PVH_MODLIST_ENTRY_SIZE 32
#define PVH_MEMMAP_ENTRY_SIZE 24

/* Linux: struct boot_params (Documentation/arch/x86/zero-page.rst, boot.rst). */
#define BP_EXT_RAMDISK_IMAGE 0x0c0
#define BP_EXT_RAMDISK_SIZE 0x0c4
#define BP_EXT_CMD_LINE_PTR 0x0c8
#define BP_E820_ENTRIES 0x1e8
#define BP_HEADER 0x202
#define BP_RAMDISK_IMAGE 0x218
#define BP_RAMDISK_SIZE 0x21c
#define BP_CMD_LINE_PTR 0x228
#define BP_E820_TABLE 0x2d0
#define BP_SIZE 0x1000
#define BP_E820_ENTRY_SIZE 20
#define HDRS_SIGNATURE 0x53726448

/* Intel MultiProcessor Specification 1.4 tables. */
#define BDA_EBDA_SEGMENT 0x40e
#define MP_FLOATING_SIGNATURE 0x5f504d5f /* "_MP_" */
#define MP_CONFIG_SIGNATURE 0x504d4350   /* "PCMP" */
#define MP_CONFIG_HEADER_SIZE 44
#define MP_ENTRY_PROCESSOR 0
#define MP_PROCESSOR_ENTRY_SIZE 20
#define MP_OTHER_ENTRY_SIZE 8
#define MP_CPU_ENABLED 0x1

/* Local xAPIC. */
#define MSR_APIC_BASE 0x1b
#define APIC_BASE_ENABLE (1u << 11)
#define APIC_BASE_X2APIC (1u << 10)
#define APIC_ID 0x020
#define APIC_SVR 0x0f0
#define APIC_ICR_LOW 0x300
#define APIC_ICR_HIGH 0x310
#define APIC_LVT_TIMER 0x320
#define APIC_TIMER_INITIAL 0x380
#define APIC_TIMER_CURRENT 0x390
#define APIC_TIMER_DIVIDE 0x3e0
#define APIC_SVR_ENABLE 0x100
#define APIC_LVT_MASKED 0x10000
#define APIC_TIMER_DIVIDE_BY_1 0xb
#define APIC_ICR_BUSY (1u << 12)
#define APIC_ICR_INIT_ASSERT 0x0000c500
#define APIC_ICR_INIT_DEASSERT 0x00008500
#define APIC_ICR_STARTUP 0x00000600

/*
 * The timer counts APIC bus cycles: 1 GHz in KVM's in-kernel APIC and in
 * QEMU's emulated one, so these counts are nanoseconds there (a real chip's
 * slower bus only makes the waits longer).
 */
#define WAIT_AFTER_INIT 10000000u      /* 10 ms, as the MP specification asks of hardware */
#define WAIT_AFTER_SIPI 200000u        /* 200 us */
#define WAIT_AFTER_SIPI_VIRTUAL 10000u /* 10 us: a hypervisor's INIT needs no settling (as in Linux) */
#define WAIT_FOR_APS 1000000000u       /* 1 s: bounded, generous for emulated start-up */
#define CPUID_1_ECX_HYPERVISOR (1u << 31)

#define AP_TRAMPOLINE 0x10000ul
#define AP_SIPI_VECTOR (AP_TRAMPOLINE >> 12)

#define SEL_TSS 0x40
#define TSS_SIZE 104
#define TSS_IOMAP_BASE 0x66
#define TSS_AVAILABLE_64 0x89
#define VECTOR_INVALID_OPCODE 6

/* Command-line switches of the VMM's failure tests (boxbench_guest::TEST_*). */
#define SWITCH_SPIN (1u << 0)
#define SWITCH_TRIPLE_FAULT (1u << 1)
#define SWITCH_FLOOD (1u << 2)
#define SWITCH_IDLE (1u << 3)

/* Problems found while reading what the loader handed over: one bit each. */
enum finding {
	PVH_INFO_UNMAPPED,
	PVH_BAD_MAGIC,
	PVH_MODLIST_UNMAPPED,
	PVH_SEVERAL_MODULES,
	PVH_NO_MEMMAP,
	PVH_MEMMAP_UNMAPPED,
	BOOT_PARAMS_UNMAPPED,
	BOOT_PARAMS_NO_HDRS,
	E820_TOO_MANY,
	MEMMAP_FULL,
	CMDLINE_UNTERMINATED,
	INITRD_UNMAPPED,
	MP_DEFAULT_CONFIGURATION,
	MP_NO_PCMP,
	MP_BAD_CHECKSUM,
	MP_TOO_MANY_CPUS,
	APIC_X2APIC_MODE,
	APIC_ADDRESS_MISMATCH,
	FINDINGS,
};

static const char *const finding_messages[FINDINGS] = {
	[PVH_INFO_UNMAPPED] = "hvm_start_info outside the first 4 GiB",
	[PVH_BAD_MAGIC] = "hvm_start_info magic is not 0x336ec578",
	[PVH_MODLIST_UNMAPPED] = "hvm_start_info modlist outside the first 4 GiB",
	[PVH_SEVERAL_MODULES] = "hvm_start_info has more than one module; only the first is the initrd",
	[PVH_NO_MEMMAP] = "hvm_start_info version 0 has no memory map",
	[PVH_MEMMAP_UNMAPPED] = "hvm_start_info memmap outside the first 4 GiB",
	[BOOT_PARAMS_UNMAPPED] = "boot_params outside the first 4 GiB",
	[BOOT_PARAMS_NO_HDRS] = "boot_params without the HdrS signature at 0x202",
	[E820_TOO_MANY] = "boot_params e820_entries above 128",
	[MEMMAP_FULL] = "memory map has more than 128 entries",
	[CMDLINE_UNTERMINATED] = "command line not terminated within 4096 bytes",
	[INITRD_UNMAPPED] = "initrd outside the first 4 GiB",
	[MP_DEFAULT_CONFIGURATION] = "MP floating pointer names a default configuration, not a table",
	[MP_NO_PCMP] = "MP configuration table without the PCMP signature",
	[MP_BAD_CHECKSUM] = "MP configuration table checksum is not zero",
	[MP_TOO_MANY_CPUS] = "MP table lists more than 64 processors; only 64 are started",
	[APIC_X2APIC_MODE] = "local APIC is in x2APIC mode; application processors not started",
	[APIC_ADDRESS_MISMATCH] = "MP table local APIC address differs from IA32_APIC_BASE",
};

extern uint32_t boot_kind;
extern uint64_t boot_info;
extern volatile uint32_t ap_started;
extern const char ap_trampoline_start[], ap_trampoline_end[];
extern void triple_fault(void) __attribute__((noreturn));
extern uint64_t gdt_tss[2];
extern uint8_t tss[TSS_SIZE];
extern char user_stack_top[];
extern const char user_trampoline_exit[];
extern uint64_t user_exit_vector, user_exit_rip;
extern uint64_t user_call(uint64_t (*fn)(uint64_t, uint64_t), uint64_t a, uint64_t b, void *stack_top);

/* Text being put together for the serial port; what does not fit is cut off. */
struct text {
	size_t len;
	char buf[REPORT_MAX];
};

struct note {
	size_t len;
	char buf[NOTE_MAX];
};

struct memory_range {
	uint64_t addr;
	uint64_t size;
	uint32_t type;
};

/*
 * What the user-mode passes found and formatted; read by kernel mode
 * afterwards. Not in .bss: read_boot_data() clears it in user mode, instead of
 * 16 KiB of emulated `rep stosq` at entry.
 */
static struct {
	char cmdline[CMDLINE_MAX + 1];
	size_t cmdline_len;
	struct memory_range memmap[MEMMAP_MAX];
	uint32_t memmap_count;
	uint64_t mem_mib;
	uint64_t initrd_addr;
	uint64_t initrd_size;
	uint32_t initrd_crc32;
	uint32_t switches;
	uint8_t mp_apic_ids[CPUS_MAX];
	uint32_t mp_cpu_count;
	uint64_t mp_lapic_addr;
	uint32_t findings;
	struct note opening;
	struct text report;
} boot __attribute__((section(".noinit")));

static uintptr_t lapic_base;
/* Bytes the UART takes before LSR must be polled again: 16 with its FIFO on, else 1. */
static uint32_t serial_burst = 1;
static struct note note;

static void __attribute__((noreturn)) reboot(void);

/* gcc may emit calls to these even in freestanding code. */
void *memset(void *dest, int value, size_t len)
{
	uint8_t *d = dest;
	while (len--)
		*d++ = (uint8_t)value;
	return dest;
}

void *memcpy(void *dest, const void *src, size_t len)
{
	uint8_t *d = dest;
	const uint8_t *s = src;
	while (len--)
		*d++ = *s++;
	return dest;
}

static inline void outb(uint16_t port, uint8_t value)
{
	__asm__ volatile("outb %0, %1" : : "a"(value), "Nd"(port));
}

static inline uint8_t inb(uint16_t port)
{
	uint8_t value;
	__asm__ volatile("inb %1, %0" : "=a"(value) : "Nd"(port));
	return value;
}

static inline uint32_t cpuid_1_ecx(void)
{
	uint32_t eax = 1, ebx, ecx = 0, edx;
	__asm__ volatile("cpuid" : "+a"(eax), "=b"(ebx), "+c"(ecx), "=d"(edx));
	return ecx;
}

/* CPUID leaf and EAX by which boxbench's VMM tells a guest it was restored ("BXBR"). */
#define LEAF_RESTORED 0x40000f00u
#define RESTORED_MAGIC 0x52425842u
#define READY_LINE "BOXBENCH_READY\n"

static inline bool restored_from_snapshot(void)
{
	uint32_t eax = LEAF_RESTORED, ebx, ecx = 0, edx;
	__asm__ volatile("cpuid" : "+a"(eax), "=b"(ebx), "+c"(ecx), "=d"(edx));
	return eax == RESTORED_MAGIC;
}

static inline uint64_t rdmsr(uint32_t msr)
{
	uint32_t lo, hi;
	__asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
	return ((uint64_t)hi << 32) | lo;
}

static inline void wrmsr(uint32_t msr, uint64_t value)
{
	__asm__ volatile("wrmsr" : : "c"(msr), "a"((uint32_t)value), "d"((uint32_t)(value >> 32)));
}

static inline uint8_t read8(uint64_t addr)
{
	return *(volatile const uint8_t *)(uintptr_t)addr;
}

static inline uint16_t read16(uint64_t addr)
{
	return *(volatile const uint16_t *)(uintptr_t)addr;
}

static inline uint32_t read32(uint64_t addr)
{
	return *(volatile const uint32_t *)(uintptr_t)addr;
}

static inline uint64_t read64(uint64_t addr)
{
	return *(volatile const uint64_t *)(uintptr_t)addr;
}

/* ---- Text formatting (plain memory work: user or kernel mode) ---- */

static void text_char(char *buf, size_t *len, size_t cap, char c)
{
	if (*len < cap)
		buf[(*len)++] = c;
}

static void text_str(char *buf, size_t *len, size_t cap, const char *s)
{
	while (*s)
		text_char(buf, len, cap, *s++);
}

static void text_dec(char *buf, size_t *len, size_t cap, uint64_t value)
{
	char digits[20];
	int n = 0;
	do {
		digits[n++] = (char)('0' + value % 10);
		value /= 10;
	} while (value);
	while (n)
		text_char(buf, len, cap, digits[--n]);
}

static void text_hex(char *buf, size_t *len, size_t cap, uint64_t value, int digits)
{
	for (int shift = (digits - 1) * 4; shift >= 0; shift -= 4)
		text_char(buf, len, cap, "0123456789abcdef"[(value >> shift) & 0xf]);
}

#define TEXT(t) (t)->buf, &(t)->len, sizeof((t)->buf)

/* ---- Serial port (kernel mode) ---- */

/*
 * Turns the 16550's FIFO on: once LSR says the transmitter is empty, 16 bytes
 * can follow without polling.
 */
static void serial_init(void)
{
	outb(SERIAL_FCR, SERIAL_FCR_FIFO_ENABLE);
	bool fifo = (inb(SERIAL_IIR) & SERIAL_IIR_FIFO_ENABLED) == SERIAL_IIR_FIFO_ENABLED;
	serial_burst = fifo ? SERIAL_FIFO_SIZE : 1;
}

/*
 * Writes `len` bytes to THR: poll LSR for an empty transmitter, then a burst
 * as one `rep outsb` (one instruction to emulate on kvm_pvm instead of three a
 * byte; each byte is still one exit to the VMM).
 */
static void serial_write(const char *s, size_t len)
{
	while (len) {
		/* Bounded: a missing UART reads as 0xff, which has the bit set. */
		for (uint32_t tries = 0; tries < 100000; tries++)
			if (inb(SERIAL_LSR) & SERIAL_LSR_THR_EMPTY)
				break;
		size_t burst = len < serial_burst ? len : serial_burst;
		len -= burst;
		__asm__ volatile("rep outsb"
				 : "+S"(s), "+c"(burst)
				 : "d"((uint16_t)SERIAL_PORT)
				 : "memory");
	}
}

/* ---- CPU tables and exceptions (kernel mode) ---- */

/* A CPU exception in kernel mode: reported, then the guest reboots. */
void __attribute__((noreturn)) kernel_exception(uint64_t vector, uint64_t error_code, uint64_t rip)
{
	note.len = 0;
	text_str(TEXT(&note), "boxbench-guest error: CPU exception ");
	text_dec(TEXT(&note), vector);
	text_str(TEXT(&note), " (error code 0x");
	text_hex(TEXT(&note), error_code, 8);
	text_str(TEXT(&note), ") at 0x");
	text_hex(TEXT(&note), rip, 16);
	text_str(TEXT(&note), " in kernel mode\n");
	serial_write(note.buf, note.len);
	reboot();
}

/* The TSS whose RSP0 user_call() sets (entry.S loaded the IDT). */
static void load_task_register(void)
{
	uint64_t base = (uint64_t)(uintptr_t)tss;
	*(uint16_t *)(tss + TSS_IOMAP_BASE) = TSS_SIZE;
	gdt_tss[0] = (TSS_SIZE - 1) | ((base & 0xffffff) << 16) | ((uint64_t)TSS_AVAILABLE_64 << 40) |
		     ((base >> 24 & 0xff) << 56);
	gdt_tss[1] = base >> 32;
	__asm__ volatile("ltr %w0" : : "r"(SEL_TSS));
}

/* ---- The user-mode pass: memory only, no port I/O, no privileged instruction ---- */

static void find(enum finding what)
{
	boot.findings |= 1u << what;
}

/* True when [addr, addr + len) lies inside the identity map. */
static bool mapped(uint64_t addr, uint64_t len)
{
	return addr < IDENTITY_MAP_END && len <= IDENTITY_MAP_END - addr;
}

/* Copies a NUL-terminated command line at `addr`. */
static void copy_cmdline(uint64_t addr)
{
	if (addr == 0)
		return;
	size_t len = 0;
	while (len < CMDLINE_MAX && mapped(addr + len, 1) && read8(addr + len) != 0) {
		boot.cmdline[len] = (char)read8(addr + len);
		len++;
	}
	if (len == CMDLINE_MAX || !mapped(addr + len, 1))
		find(CMDLINE_UNTERMINATED);
	boot.cmdline[len] = 0;
	boot.cmdline_len = len;
}

static void add_memory_range(uint64_t addr, uint64_t size, uint32_t type)
{
	if (boot.memmap_count == MEMMAP_MAX) {
		find(MEMMAP_FULL);
		return;
	}
	boot.memmap[boot.memmap_count].addr = addr;
	boot.memmap[boot.memmap_count].size = size;
	boot.memmap[boot.memmap_count].type = type;
	boot.memmap_count++;
}

static void read_pvh_start_info(uint64_t info)
{
	if (!mapped(info, PVH_START_INFO_V1_SIZE)) {
		find(PVH_INFO_UNMAPPED);
		return;
	}
	if (read32(info) != PVH_MAGIC) {
		find(PVH_BAD_MAGIC);
		return;
	}
	uint32_t version = read32(info + PVH_VERSION);
	copy_cmdline(read64(info + PVH_CMDLINE_PADDR));

	uint32_t nr_modules = read32(info + PVH_NR_MODULES);
	uint64_t modlist = read64(info + PVH_MODLIST_PADDR);
	if (nr_modules > 0) {
		if (!mapped(modlist, PVH_MODLIST_ENTRY_SIZE)) {
			find(PVH_MODLIST_UNMAPPED);
		} else {
			boot.initrd_addr = read64(modlist);
			boot.initrd_size = read64(modlist + 8);
		}
		if (nr_modules > 1)
			find(PVH_SEVERAL_MODULES);
	}

	if (version < 1) {
		find(PVH_NO_MEMMAP);
		return;
	}
	uint64_t table = read64(info + PVH_MEMMAP_PADDR);
	uint32_t entries = read32(info + PVH_MEMMAP_ENTRIES);
	if (!mapped(table, (uint64_t)entries * PVH_MEMMAP_ENTRY_SIZE)) {
		find(PVH_MEMMAP_UNMAPPED);
		return;
	}
	for (uint32_t i = 0; i < entries; i++) {
		uint64_t entry = table + (uint64_t)i * PVH_MEMMAP_ENTRY_SIZE;
		add_memory_range(read64(entry), read64(entry + 8), read32(entry + 16));
	}
}

static void read_boot_params(uint64_t params)
{
	if (!mapped(params, BP_SIZE)) {
		find(BOOT_PARAMS_UNMAPPED);
		return;
	}
	if (read32(params + BP_HEADER) != HDRS_SIGNATURE) {
		find(BOOT_PARAMS_NO_HDRS);
		return;
	}
	copy_cmdline(read32(params + BP_CMD_LINE_PTR) | ((uint64_t)read32(params + BP_EXT_CMD_LINE_PTR) << 32));
	boot.initrd_addr = read32(params + BP_RAMDISK_IMAGE) | ((uint64_t)read32(params + BP_EXT_RAMDISK_IMAGE) << 32);
	boot.initrd_size = read32(params + BP_RAMDISK_SIZE) | ((uint64_t)read32(params + BP_EXT_RAMDISK_SIZE) << 32);

	uint32_t entries = read8(params + BP_E820_ENTRIES);
	if (entries > MEMMAP_MAX) {
		find(E820_TOO_MANY);
		entries = MEMMAP_MAX;
	}
	for (uint32_t i = 0; i < entries; i++) {
		uint64_t entry = params + BP_E820_TABLE + (uint64_t)i * BP_E820_ENTRY_SIZE;
		add_memory_range(read64(entry), read64(entry + 8), read32(entry + 16));
	}
}

static uint64_t ram_mib(void)
{
	uint64_t bytes = 0;
	for (uint32_t i = 0; i < boot.memmap_count; i++)
		if (boot.memmap[i].type == E820_RAM)
			bytes += boot.memmap[i].size;
	return (bytes + (1ull << 20) - 1) >> 20;
}

/* CRC-32, IEEE 802.3 (reflected polynomial 0xedb88320), as crc32fast and zlib compute it. */
static uint32_t crc32_of(uint64_t addr, uint64_t len)
{
	const uint8_t *p = (const uint8_t *)(uintptr_t)addr;
	uint32_t crc = 0xffffffffu;
	while (len--)
		crc = crc32_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

/* True when `word` appears in the command line as a whole space-separated word. */
static bool cmdline_has(const char *word)
{
	size_t word_len = 0;
	while (word[word_len])
		word_len++;
	size_t i = 0;
	while (i < boot.cmdline_len) {
		while (i < boot.cmdline_len && boot.cmdline[i] == ' ')
			i++;
		size_t start = i;
		while (i < boot.cmdline_len && boot.cmdline[i] != ' ')
			i++;
		if (i - start == word_len) {
			size_t k = 0;
			while (k < word_len && boot.cmdline[start + k] == word[k])
				k++;
			if (k == word_len)
				return true;
		}
	}
	return false;
}

static uint8_t checksum(uint64_t addr, uint64_t len)
{
	uint8_t sum = 0;
	for (uint64_t i = 0; i < len; i++)
		sum = (uint8_t)(sum + read8(addr + i));
	return sum;
}

/* Finds the MP floating pointer structure ("_MP_", 16-byte aligned, checksum 0). */
static uint64_t find_mp_floating(uint64_t start, uint64_t len)
{
	for (uint64_t addr = start; addr + 16 <= start + len; addr += 16)
		if (read32(addr) == MP_FLOATING_SIGNATURE && checksum(addr, 16) == 0)
			return addr;
	return 0;
}

/* Reads the enabled processor entries of the MP configuration table, if there is one. */
static void read_mp_table(void)
{
	uint64_t ebda = (uint64_t)read16(BDA_EBDA_SEGMENT) << 4;
	uint64_t floating = 0;
	if (ebda >= 0x80000 && ebda < 0xa0000)
		floating = find_mp_floating(ebda, 1024);
	if (!floating)
		floating = find_mp_floating(0x9fc00, 1024);
	if (!floating)
		floating = find_mp_floating(0xf0000, 0x10000);
	if (!floating)
		return;

	uint64_t config = read32(floating + 4);
	if (config == 0) {
		find(MP_DEFAULT_CONFIGURATION);
		return;
	}
	if (!mapped(config, MP_CONFIG_HEADER_SIZE) || read32(config) != MP_CONFIG_SIGNATURE) {
		find(MP_NO_PCMP);
		return;
	}
	uint16_t length = read16(config + 4);
	if (!mapped(config, length) || checksum(config, length) != 0) {
		find(MP_BAD_CHECKSUM);
		return;
	}
	boot.mp_lapic_addr = read32(config + 36);
	uint16_t entries = read16(config + 34);
	uint64_t entry = config + MP_CONFIG_HEADER_SIZE;
	uint64_t end = config + length;
	for (uint16_t i = 0; i < entries && entry < end; i++) {
		if (read8(entry) == MP_ENTRY_PROCESSOR) {
			if (read8(entry + 3) & MP_CPU_ENABLED) {
				if (boot.mp_cpu_count < CPUS_MAX)
					boot.mp_apic_ids[boot.mp_cpu_count] = read8(entry + 1);
				else
					find(MP_TOO_MANY_CPUS);
				boot.mp_cpu_count++;
			}
			entry += MP_PROCESSOR_ENTRY_SIZE;
		} else {
			entry += MP_OTHER_ENTRY_SIZE;
		}
	}
}

/*
 * What the guest prints first: the entry line, then the ready marker unless a
 * test switch withholds it. The marker comes before the report: every byte on
 * the serial port is a VM exit (tens of microseconds, emulated, on kvm_pvm), and
 * the report is not what the workload waits for. The entry line before it is
 * what a `uname` run reports as the release this guest runs on.
 */
static void format_opening(void)
{
	struct note *t = &boot.opening;
	t->len = 0;
	text_str(TEXT(t), "boxbench-guest entry=");
	text_str(TEXT(t), boot_kind == BOOT_PVH ? "pvh\n" : boot_kind == BOOT_LINUX32 ? "linux32\n" : "linux64\n");
	if ((boot.switches & ~SWITCH_IDLE) == 0)
		text_str(TEXT(t), READY_LINE);
}

/* The whole user-mode pass; starts from a clean slate so kernel mode can rerun it. */
static uint64_t read_boot_data(uint64_t kind, uint64_t info)
{
	memset(&boot, 0, sizeof(boot));
	if (kind == BOOT_PVH)
		read_pvh_start_info(info);
	else
		read_boot_params(info);
	boot.mem_mib = ram_mib();

	if (boot.initrd_size != 0) {
		if (mapped(boot.initrd_addr, boot.initrd_size))
			boot.initrd_crc32 = crc32_of(boot.initrd_addr, boot.initrd_size);
		else
			find(INITRD_UNMAPPED);
	}

	if (cmdline_has("boxbench.test=spin"))
		boot.switches |= SWITCH_SPIN;
	if (cmdline_has("boxbench.test=triple-fault"))
		boot.switches |= SWITCH_TRIPLE_FAULT;
	if (cmdline_has("boxbench.test=flood"))
		boot.switches |= SWITCH_FLOOD;
	/* The `idle` workload: up (marker printed), then kept running until killed, for density runs. */
	if (cmdline_has("boxbench.workload=idle"))
		boot.switches |= SWITCH_IDLE;

	read_mp_table();
	format_opening();
	return 0;
}

/* Formats the report that follows the opening: findings, then the report line. `cpus` answered. */
static uint64_t format_report(uint64_t cpus, uint64_t unused)
{
	(void)unused;
	struct text *t = &boot.report;
	t->len = 0;
	for (uint32_t what = 0; what < FINDINGS; what++) {
		if (boot.findings & (1u << what)) {
			text_str(TEXT(t), "boxbench-guest error: ");
			text_str(TEXT(t), finding_messages[what]);
			text_char(TEXT(t), '\n');
		}
	}
	text_str(TEXT(t), "boxbench-guest cpus=");
	text_dec(TEXT(t), cpus);
	if (boot.mp_cpu_count != cpus) {
		text_str(TEXT(t), " mp_cpus=");
		text_dec(TEXT(t), boot.mp_cpu_count);
	}
	text_str(TEXT(t), " mem_mib=");
	text_dec(TEXT(t), boot.mem_mib);
	text_str(TEXT(t), " initrd_bytes=");
	text_dec(TEXT(t), boot.initrd_size);
	text_str(TEXT(t), " initrd_crc32=");
	text_hex(TEXT(t), boot.initrd_crc32, 8);
	text_str(TEXT(t), " cmdline=\"");
	for (size_t i = 0; i < boot.cmdline_len; i++)
		text_char(TEXT(t), boot.cmdline[i]);
	text_str(TEXT(t), "\"\n");
	return 0;
}

static uint64_t format_flood_line(uint64_t line, uint64_t unused)
{
	(void)unused;
	struct text *t = &boot.report;
	t->len = 0;
	text_str(TEXT(t), "boxbench-guest flood ");
	text_dec(TEXT(t), line);
	text_char(TEXT(t), '\n');
	return 0;
}

/*
 * Runs fn(a, b) at CPL 3 (natively on kvm_pvm); in kernel mode, and says so,
 * if user mode did not end at the planned ud2.
 */
static void run_in_user_mode(uint64_t (*fn)(uint64_t, uint64_t), uint64_t a, uint64_t b)
{
	user_call(fn, a, b, user_stack_top);
	if (user_exit_vector == VECTOR_INVALID_OPCODE && user_exit_rip == (uint64_t)(uintptr_t)user_trampoline_exit)
		return;
	note.len = 0;
	text_str(TEXT(&note), "boxbench-guest error: user mode ended by CPU exception ");
	text_dec(TEXT(&note), user_exit_vector);
	text_str(TEXT(&note), " at 0x");
	text_hex(TEXT(&note), user_exit_rip, 16);
	text_str(TEXT(&note), "; rerun in kernel mode\n");
	serial_write(note.buf, note.len);
	fn(a, b);
}

/* ---- Application processors (kernel mode) ---- */

static inline uint32_t lapic_read(uint32_t reg)
{
	return *(volatile uint32_t *)(lapic_base + reg);
}

static inline void lapic_write(uint32_t reg, uint32_t value)
{
	*(volatile uint32_t *)(lapic_base + reg) = value;
}

/* Starts the one-shot APIC timer, masked: only its count is read. */
static void timer_start(uint32_t count)
{
	lapic_write(APIC_TIMER_INITIAL, count);
}

static bool timer_expired(void)
{
	return lapic_read(APIC_TIMER_CURRENT) == 0;
}

static void delay(uint32_t count)
{
	timer_start(count);
	while (!timer_expired())
		__asm__ volatile("pause");
}

static void send_ipi(uint8_t apic_id, uint32_t command)
{
	lapic_write(APIC_ICR_HIGH, (uint32_t)apic_id << 24);
	lapic_write(APIC_ICR_LOW, command);
	timer_start(WAIT_AFTER_SIPI);
	while ((lapic_read(APIC_ICR_LOW) & APIC_ICR_BUSY) && !timer_expired())
		__asm__ volatile("pause");
}

/* INIT-SIPI-SIPI to every enabled processor of the MP table but this one; returns how many answered. */
static uint32_t start_application_processors(void)
{
	uint64_t apic_base_msr = rdmsr(MSR_APIC_BASE);
	if (apic_base_msr & APIC_BASE_X2APIC) {
		boot.findings |= 1u << APIC_X2APIC_MODE;
		return 0;
	}
	if (!(apic_base_msr & APIC_BASE_ENABLE))
		wrmsr(MSR_APIC_BASE, apic_base_msr | APIC_BASE_ENABLE);
	lapic_base = (uintptr_t)(apic_base_msr & 0xfffff000ull);
	if (boot.mp_lapic_addr && boot.mp_lapic_addr != lapic_base)
		boot.findings |= 1u << APIC_ADDRESS_MISMATCH;

	lapic_write(APIC_SVR, APIC_SVR_ENABLE | 0xff);
	lapic_write(APIC_LVT_TIMER, APIC_LVT_MASKED);
	lapic_write(APIC_TIMER_DIVIDE, APIC_TIMER_DIVIDE_BY_1);

	memcpy((void *)AP_TRAMPOLINE, ap_trampoline_start, (size_t)(ap_trampoline_end - ap_trampoline_start));

	uint8_t self = (uint8_t)(lapic_read(APIC_ID) >> 24);
	uint32_t cpus = boot.mp_cpu_count < CPUS_MAX ? boot.mp_cpu_count : CPUS_MAX;
	uint32_t targets = 0;
	for (uint32_t i = 0; i < cpus; i++) {
		if (boot.mp_apic_ids[i] == self)
			continue;
		send_ipi(boot.mp_apic_ids[i], APIC_ICR_INIT_ASSERT);
		send_ipi(boot.mp_apic_ids[i], APIC_ICR_INIT_DEASSERT);
		targets++;
	}
	if (targets == 0)
		return 0;
	bool virtual_cpu = cpuid_1_ecx() & CPUID_1_ECX_HYPERVISOR;
	if (!virtual_cpu)
		delay(WAIT_AFTER_INIT);
	for (int round = 0; round < 2; round++) {
		for (uint32_t i = 0; i < cpus; i++)
			if (boot.mp_apic_ids[i] != self)
				send_ipi(boot.mp_apic_ids[i], APIC_ICR_STARTUP | AP_SIPI_VECTOR);
		delay(virtual_cpu ? WAIT_AFTER_SIPI_VIRTUAL : WAIT_AFTER_SIPI);
	}

	timer_start(WAIT_FOR_APS);
	while (ap_started < targets && !timer_expired())
		__asm__ volatile("pause");
	return ap_started;
}

/* ---- Report and end (kernel mode) ---- */

/* i8042 pulse reset; then the PC reset-control port for machines without an i8042. */
static void __attribute__((noreturn)) reboot(void)
{
	outb(I8042_COMMAND, I8042_PULSE_RESET);
	outb(RESET_CONTROL_PORT, RESET_CONTROL_RESET);
	for (;;)
		__asm__ volatile("cli; hlt");
}

void __attribute__((noreturn)) guest_main(void)
{
	/* The boot timer first: it stands for "first guest userspace instruction". */
	*(volatile uint8_t *)(uintptr_t)BOOT_TIMER_ADDR = BOOT_TIMER_VALUE;

	load_task_register();
	serial_init();
	run_in_user_mode(read_boot_data, boot_kind, boot_info);
	serial_write(boot.opening.buf, boot.opening.len);
	/*
	 * boxbench's VMM snapshots this guest when its marker has gone out; a VM
	 * restored from that snapshot starts here, and its VMM says so in CPUID.
	 * Its console has not seen the marker: it goes out again.
	 */
	if ((boot.switches & ~SWITCH_IDLE) == 0 && restored_from_snapshot())
		serial_write(READY_LINE, sizeof(READY_LINE) - 1);

	uint32_t cpus = 1;
	if (boot.mp_cpu_count > 1)
		cpus += start_application_processors();

	run_in_user_mode(format_report, cpus, 0);
	serial_write(boot.report.buf, boot.report.len);

	if (boot.switches & SWITCH_SPIN)
		for (;;)
			__asm__ volatile("cli; pause");
	if (boot.switches & SWITCH_TRIPLE_FAULT)
		triple_fault();
	/* Halted with interrupts off, every vCPU sleeps in KVM without exiting: an idle VM at rest. */
	if (boot.switches & SWITCH_IDLE)
		for (;;)
			__asm__ volatile("cli; hlt");
	if (boot.switches & SWITCH_FLOOD)
		for (uint64_t line = 0;; line++) {
			run_in_user_mode(format_flood_line, line, 0);
			serial_write(boot.report.buf, boot.report.len);
		}
	reboot();
}
