/*
 * boxbench-guest: entry points, mode switches, descriptor tables, page tables
 * and the application-processor trampoline.
 *
 * Image layout (linked at physical 0x100000, see linker.ld):
 *   +0x000  PVH / 32-bit entry: protected mode, paging off. EBX = hvm_start_info
 *           (Xen PVH ABI), or ESI = boot_params (Linux 32-bit boot protocol,
 *           EBX = 0), told apart by the PVH magic.
 *   +0x200  64-bit Linux boot protocol entry: long mode, RSI = boot_params.
 *
 * Both paths switch to this image's own GDT and to its own page tables: an
 * identity map of the first 4 GiB with 2 MiB pages, built at assembly time so
 * that no loop runs to fill it (instructions in guest kernel mode are
 * emulated one by one on a kvm_pvm host).
 */

#define BOOT_PVH      1
#define BOOT_LINUX32  2
#define BOOT_LINUX64  3

#define PVH_MAGIC     0x336ec578

#define SEL_CODE64    0x08
#define SEL_DATA      0x10
#define SEL_CODE32    0x18
/* User segments at Linux's selectors (__USER_DS, __USER_CS), RPL 3. */
#define SEL_USER_DATA 0x2b
#define SEL_USER_CODE 0x33

#define MSR_EFER      0xc0000080
#define EFER_LME      0x100
#define CR0_PE        0x1
#define CR0_PG        0x80000000
#define CR4_PAE       0x20
#define RFLAGS_FIXED  0x2

#define AP_TRAMPOLINE 0x10000

#define LOAD_ADDRESS   0x100000
#define EXCEPTION_STUBS (LOAD_ADDRESS + 0x400)
#define EXCEPTION_STUB_SIZE 16
#define IDT_INTERRUPT_GATE 0x8e

/*
 * From 32-bit protected mode with paging off to long mode, continuing at
 * `target` with CS = SEL_CODE64. Clobbers EAX, ECX, EDX.
 */
.macro enter_long_mode target
	movl	%cr4, %eax
	orl	$CR4_PAE, %eax
	movl	%eax, %cr4
	movl	$pml4, %eax
	movl	%eax, %cr3
	movl	$MSR_EFER, %ecx
	rdmsr
	orl	$EFER_LME, %eax
	wrmsr
	movl	%cr0, %eax
	orl	$(CR0_PG | CR0_PE), %eax
	movl	%eax, %cr0
	ljmpl	$SEL_CODE64, $\target
.endm

	.section .text.entry, "ax"
	.code32
	.globl	entry32
entry32:
	cli
	cld
	movl	$BOOT_PVH, %edi
	testl	%ebx, %ebx
	jz	1f
	cmpl	$PVH_MAGIC, (%ebx)
	je	2f
1:	/* Linux 32-bit boot protocol: ESI holds boot_params. */
	movl	$BOOT_LINUX32, %edi
	movl	%esi, %ebx
2:	movl	%edi, boot_kind
	movl	%ebx, boot_info
	lgdtl	gdt_descriptor
	movl	$SEL_DATA, %eax
	movl	%eax, %ds
	movl	%eax, %es
	movl	%eax, %ss
	movl	%eax, %fs
	movl	%eax, %gs
	enter_long_mode bsp_long_mode

	.org	0x200
	.code64
	.globl	entry64
entry64:
	cli
	cld
	/* The 64-bit protocol promises no stack; init_size covers this one. */
	leaq	bsp_stack_top(%rip), %rsp
	movl	$BOOT_LINUX64, boot_kind(%rip)
	movq	%rsi, boot_info(%rip)
	lgdt	gdt_descriptor(%rip)
	/* Reload CS from this image's GDT with a far return. */
	pushq	$SEL_CODE64
	leaq	1f(%rip), %rax
	pushq	%rax
	lretq
1:	movl	$CR4_PAE, %eax	/* nothing else, e.g. no SMEP: the guest runs code on user pages */
	movq	%rax, %cr4
	movl	$pml4, %eax
	movq	%rax, %cr3
	/* fall through */

bsp_long_mode:
	movl	$SEL_DATA, %eax
	movl	%eax, %ds
	movl	%eax, %es
	movl	%eax, %ss
	movl	%eax, %fs
	movl	%eax, %gs
	leaq	bsp_stack_top(%rip), %rsp
	xorl	%ebp, %ebp
	lidt	idt_descriptor(%rip)
	/* Zero .bss (the loaders copy file contents only). */
	leaq	_bss_start(%rip), %rdi
	leaq	_bss_end(%rip), %rcx
	subq	%rdi, %rcx
	shrq	$3, %rcx
	xorl	%eax, %eax
	rep stosq
	call	guest_main
	/* guest_main does not return; halt if it ever does. */
halt_forever:
	cli
	hlt
	jmp	halt_forever

/*
 * CPU exceptions: 32 stubs, 16 bytes apart at a fixed address (so that the
 * IDT can be assembled, not built by emulated instructions), that push an
 * error code (0 where the CPU pushes none) and the vector. An exception from
 * user mode ends the user_call() in progress; one in kernel mode goes to
 * kernel_exception().
 */
	.org	EXCEPTION_STUBS - LOAD_ADDRESS
	.globl	exception_stubs
exception_stubs:
	.set	vector, 0
	.rept	32
	.balign	16
	.if	!((vector == 8) || (vector == 10) || (vector == 11) || (vector == 12) || (vector == 13) || (vector == 14) || (vector == 17) || (vector == 21) || (vector == 29) || (vector == 30))
	pushq	$0
	.endif
	pushq	$vector
	jmp	exception_common
	.set	vector, vector + 1
	.endr

/*
 * Application processors arrive here from the trampoline, in 32-bit protected
 * mode with CS = SEL_CODE32, and count themselves in. They need no stack.
 */
	.code32
ap_entry32:
	movl	$SEL_DATA, %eax
	movl	%eax, %ds
	movl	%eax, %es
	movl	%eax, %ss
	enter_long_mode ap_long_mode

	.code64
ap_long_mode:
	lock incl ap_started(%rip)
1:	cli
	hlt
	jmp	1b

/*
 * An IDT with limit zero turns the first exception into a double and then a
 * triple fault. ud2 comes first: kvm_pvm's instruction emulator fails on int3
 * (a KVM internal error instead of a #BP), which is the fallback.
 */
	.globl	triple_fault
triple_fault:
	lidt	empty_idt_descriptor(%rip)
	ud2
	int3
	jmp	halt_forever

/* Stack: vector, error code, RIP, CS, RFLAGS, RSP, SS. */
exception_common:
	testb	$3, 24(%rsp)
	jz	1f
	/* From user mode: RAX holds the user function's result. */
	movq	0(%rsp), %rdx
	movq	%rdx, user_exit_vector(%rip)
	movq	16(%rsp), %rdx
	movq	%rdx, user_exit_rip(%rip)
	movq	user_call_rsp(%rip), %rsp
	movl	$SEL_DATA, %edx
	movl	%edx, %ds
	movl	%edx, %es
	movl	%edx, %ss
	popq	%r15
	popq	%r14
	popq	%r13
	popq	%r12
	popq	%rbp
	popq	%rbx
	ret
1:	movq	0(%rsp), %rdi
	movq	8(%rsp), %rsi
	movq	16(%rsp), %rdx
	andq	$-16, %rsp
	call	kernel_exception
	jmp	halt_forever

/*
 * uint64_t user_call(uint64_t (*fn)(uint64_t, uint64_t), uint64_t a, uint64_t b,
 *                    void *stack_top)
 * Runs fn(a, b) in user mode (CPL 3, interrupts off); fn returns into ud2,
 * whose #UD brings the CPU back here through the TSS's RSP0. Returns RAX at
 * that exception; user_exit_vector/user_exit_rip tell how user mode ended.
 * Under kvm_pvm guest user mode runs natively while kernel mode is emulated.
 */
	.globl	user_call
user_call:
	pushq	%rbx
	pushq	%rbp
	pushq	%r12
	pushq	%r13
	pushq	%r14
	pushq	%r15
	movq	%rsp, user_call_rsp(%rip)
	movq	%rsp, tss + 4(%rip)		/* RSP0 */
	pushq	$SEL_USER_DATA
	pushq	%rcx
	pushq	$RFLAGS_FIXED
	pushq	$SEL_USER_CODE
	leaq	user_trampoline(%rip), %rax
	pushq	%rax
	movq	%rdi, %rax
	movq	%rsi, %rdi
	movq	%rdx, %rsi
	movq	%rax, %rdx
	xorl	%eax, %eax
	xorl	%ebx, %ebx
	xorl	%ecx, %ecx
	xorl	%ebp, %ebp
	iretq

/* The user-mode side: call the function, then trap back to the kernel. */
	.globl	user_trampoline_exit
user_trampoline:
	call	*%rdx
user_trampoline_exit:
	ud2
	jmp	user_trampoline_exit

/*
 * Real-mode trampoline, copied to AP_TRAMPOLINE (SIPI vector 0x10): CS = 0x1000,
 * IP = 0. Only CS-relative addressing until protected mode is on.
 */
	.section .rodata.trampoline, "a"
	.code16
	.globl	ap_trampoline_start, ap_trampoline_end
ap_trampoline_start:
	cli
	cld
	lgdtl	%cs:(trampoline_gdt_descriptor - ap_trampoline_start)
	movl	%cr0, %eax
	orl	$CR0_PE, %eax
	movl	%eax, %cr0
	ljmpl	$SEL_CODE32, $ap_entry32
	.balign	4
trampoline_gdt_descriptor:
	.word	gdt_end - gdt - 1
	.long	gdt
ap_trampoline_end:

	.section .data.gdt, "aw"
	.balign	16
	.globl	gdt_tss
gdt:
	.quad	0
	.quad	0x00af9a000000ffff	/* SEL_CODE64: long mode, DPL 0 */
	.quad	0x00cf92000000ffff	/* SEL_DATA: flat 4 GiB read/write */
	.quad	0x00cf9a000000ffff	/* SEL_CODE32: flat 4 GiB, 32-bit */
	.quad	0
	.quad	0x00cff2000000ffff	/* SEL_USER_DATA: flat read/write, DPL 3 */
	.quad	0x00affa000000ffff	/* SEL_USER_CODE: long mode, DPL 3 */
	.quad	0
gdt_tss:			/* selector 0x40: the 64-bit TSS, filled in by guest.c */
	.quad	0
	.quad	0
gdt_end:

	.section .rodata
	.balign	8
gdt_descriptor:
	.word	gdt_end - gdt - 1
	.quad	gdt
/* Interrupt gates for vectors 0-31, to the stubs at EXCEPTION_STUBS. */
	.balign	16
idt:
	.set	vector, 0
	.rept	32
	.set	stub, EXCEPTION_STUBS + vector * EXCEPTION_STUB_SIZE
	.quad	(stub & 0xffff) | (SEL_CODE64 << 16) | (IDT_INTERRUPT_GATE << 40) | (((stub >> 16) & 0xffff) << 48)
	.quad	stub >> 32
	.set	vector, vector + 1
	.endr
idt_end:
	.balign	8
idt_descriptor:
	.word	idt_end - idt - 1
	.quad	idt
	.balign	8
empty_idt_descriptor:
	.word	0
	.quad	0

/*
 * Identity map of [0, 4 GiB) with 2 MiB pages: present, writable, user
 * (user_call runs guest code at CPL 3 on it), large.
 */
	.section .data.page_tables, "aw"
	.balign	4096
pml4:
	.quad	pdpt + 0x7
	.fill	511, 8, 0
pdpt:
	.quad	page_directories + 0x0000 + 0x7
	.quad	page_directories + 0x1000 + 0x7
	.quad	page_directories + 0x2000 + 0x7
	.quad	page_directories + 0x3000 + 0x7
	.fill	508, 8, 0
page_directories:
	.set	large_page, 0
	.rept	2048
	.quad	(large_page << 21) | 0x87
	.set	large_page, large_page + 1
	.endr

	.section .data
	.balign	8
	.globl	boot_kind, boot_info, ap_started, tss, user_exit_vector, user_exit_rip
boot_kind:
	.long	0
	.balign	8
boot_info:
	.quad	0
user_call_rsp:
	.quad	0
user_exit_vector:
	.quad	0
user_exit_rip:
	.quad	0
ap_started:
	.long	0
	.balign	16
tss:				/* 64-bit TSS: RSP0 at +4, no I/O bitmap */
	.fill	104, 1, 0

/* The Xen PVH entry note: XEN_ELFNOTE_PHYS32_ENTRY (18), name "Xen". */
	.section .note.Xen, "a", @note
	.balign	4
	.long	2f - 1f		/* namesz */
	.long	4f - 3f		/* descsz */
	.long	18		/* type */
1:	.asciz	"Xen"
2:	.balign	4
3:	.long	entry32
4:	.balign	4

	.section .stack, "aw", @nobits
	.balign	16
	.space	16384
bsp_stack_top:
	.globl	user_stack_top
	.space	8192
user_stack_top:

	.section .note.GNU-stack, "", @progbits
