/*
 * boxbench-guest: real-mode setup code of the bzImage, for loaders that run
 * it (QEMU's -kernel on the pc/q35 machines through the BIOS). Loaders that
 * use the 64-bit boot protocol (linux-loader, boxbench's VMM) skip it.
 *
 * Entered as Linux's setup is: CS = setup segment + 0x20, IP = the jump at
 * file offset 0x200, DS = ES = SS = setup segment (its start is boot_params,
 * the header filled in by the loader). Linked at 0xe00 (file offset 0x1000,
 * past the zero page's e820 table). It asks the BIOS for the e820 map, turns
 * on A20, enters 32-bit protected mode and jumps to code32_start with ESI =
 * boot_params, EBX = EBP = EDI = 0: Linux's 32-bit boot protocol.
 */

#define BP_E820_ENTRIES   0x1e8
#define BP_CODE32_START   0x214
#define BP_E820_TABLE     0x2d0
#define E820_ENTRY_SIZE   20
#define E820_MAX_ENTRIES  128
#define SMAP              0x534d4150
#define BOOT_CS           0x10
#define BOOT_DS           0x18

	.code16
	.section .text
	.globl	setup_start
setup_start:
	cli
	cld
	movw	%cs, %ax
	subw	$0x20, %ax
	movw	%ax, %ds
	movw	%ax, %es

	/* e820 map from the BIOS into boot_params. */
	xorl	%ebx, %ebx
	movw	$BP_E820_TABLE, %di
	xorw	%bp, %bp
1:	movl	$0xe820, %eax
	movl	$E820_ENTRY_SIZE, %ecx
	movl	$SMAP, %edx
	int	$0x15
	cli
	jc	2f
	cmpl	$SMAP, %eax
	jne	2f
	addw	$E820_ENTRY_SIZE, %di
	incw	%bp
	testl	%ebx, %ebx
	jz	2f
	cmpw	$E820_MAX_ENTRIES, %bp
	jb	1b
2:	movw	%bp, %ax
	movb	%al, BP_E820_ENTRIES

	/* Fast A20 gate (port 0x92), so that bit 20 of addresses is not masked. */
	inb	$0x92, %al
	orb	$0x02, %al
	andb	$0xfe, %al
	outb	%al, $0x92

	/* Linear addresses: boot_params, our GDT; the far jump's target. */
	movw	%ds, %ax
	movzwl	%ax, %esi
	shll	$4, %esi
	movw	%cs, %ax
	movzwl	%ax, %eax
	shll	$4, %eax
	addl	$setup_gdt, %eax
	movl	%eax, %cs:setup_gdt_base
	movl	BP_CODE32_START, %eax
	movl	%eax, %cs:code32_target

	lgdtl	%cs:setup_gdt_descriptor
	movl	%cr0, %eax
	orl	$1, %eax
	movl	%eax, %cr0
	movw	$BOOT_DS, %ax
	movw	%ax, %ds
	movw	%ax, %es
	movw	%ax, %ss
	movw	%ax, %fs
	movw	%ax, %gs
	xorl	%ebx, %ebx
	xorl	%ebp, %ebp
	xorl	%edi, %edi
	ljmpl	*%cs:code32_target

	.balign	8
setup_gdt:
	.quad	0
	.quad	0
	.quad	0x00cf9a000000ffff	/* BOOT_CS: flat 4 GiB, 32-bit code */
	.quad	0x00cf92000000ffff	/* BOOT_DS: flat 4 GiB, read/write */
setup_gdt_end:
setup_gdt_descriptor:
	.word	setup_gdt_end - setup_gdt - 1
setup_gdt_base:
	.long	0
code32_target:
	.long	0
	.word	BOOT_CS

	.section .note.GNU-stack, "", @progbits
