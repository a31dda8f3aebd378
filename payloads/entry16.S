# entry16.S: the real-mode entry, for the payload booted straight from the
# firmware (the POST baseline) by its own loaders, bootdisk.S and bootcd.S,
# and the banner's `via=` field that says how any entry was reached.
#
# The loaders' contract: real mode, CS:IP = 2000:(kt_entry16 - KT_BASE), the
# whole load segment read to KT_BASE, DL = the BIOS drive it was read from,
# BL = the medium (0 a disk by its boot sector, 1 a CD by El Torito).  The
# entry records the state it finds as the 32-bit entry does (the registers
# are the loader's; CR0, the descriptor tables and the IVT are the
# firmware's), switches to flat protected mode with the payload's own GDT
# and joins common32: from there every entry runs the same code.

	.code16
	.globl kt_entry16
kt_entry16:
	cli
	cld
	movl %eax, %cs:(s_eax - K0)
	movw %cs, %ax
	movw %ax, %ds
	movl %ebx, s_ebx - K0
	movl %ecx, s_ecx - K0
	movl %edx, s_edx - K0
	movl %esi, s_esi - K0
	movl %edi, s_edi - K0
	movl %ebp, s_ebp - K0
	movl %esp, s_esp - K0			# SP on the loader's stack (SS not kept)
	pushfl
	popl s_eflags - K0
	movl %cr0, %eax
	movl %eax, s_cr0 - K0
	movl %cr3, %eax
	movl %eax, s_cr3 - K0
	movl %cr4, %eax
	movl %eax, s_cr4 - K0
	sgdtl s_gdtr - K0
	sidtl s_idtr - K0
	movb $16, entry_mode - K0
	movb %dl, boot_drive - K0
	movb %bl, boot_medium - K0
	movl $0x80000000, %eax			# EFER only where CPUID shows LM, NX
	cpuid					# or SYSCALL (as kt_entry32)
	cmpl $0x80000001, %eax
	jb 1f
	movl $0x80000001, %eax
	cpuid
	testl $((1 << 29) | (1 << 20) | (1 << 11)), %edx
	jz 1f
	movl $0xC0000080, %ecx
	rdmsr
	movl %eax, s_efer - K0
	movb $1, s_efer_ok - K0
1:	lgdtl gdt_desc - K0
	movl %cr0, %eax
	orl $1, %eax
	movl %eax, %cr0
	ljmpl $0x08, $entry16_pm		# flat 32-bit code, paging off

	.code32
entry16_pm:
	jmp common32

# Banner field " via=...": disk or cd (this entry, with " drive=XX", the BIOS
# drive), setup (this entry from the bzImage's real-mode code, bzimage.S),
# bzimage (its 32- or 64-bit entry), multiboot (the 32-bit entry with EAX = 2BADB002h: QEMU -kernel or a
# boot loader), kexec (the 32-bit entry otherwise -- kexec-tools' purgatory
# leaves EAX = 0 -- and the 64-bit entry).  Keeps registers.
banner_via32:
	pushal
	cmpb $16, entry_mode
	je 2f
	movl $via_bzimage, %esi
	cmpb $0, bz_door
	jne 1f
	movl $via_kexec, %esi
	cmpb $32, entry_mode
	jne 1f
	cmpl $0x2BADB002, s_eax
	jne 1f
	movl $via_multiboot, %esi
1:	PUTS32 " via="
	call puts32
	popal
	ret
2:	movl $via_disk, %esi
	cmpb $1, boot_medium
	jb 3f
	movl $via_cd, %esi
	je 3f
	movl $via_setup, %esi			# the bzImage's real-mode entry: no drive
	cmpb $2, boot_medium
	jne 4f
	PUTS32 " via="
	call puts32
	popal
	ret
4:	movl $via_loader, %esi			# another loader keeping the contract
3:	PUTS32 " via="
	call puts32
	PUTS32 " drive="
	movzbl boot_drive, %eax
	movl $2, %ecx
	call hex32
	popal
	ret

	.subsection 1
via_kexec:	.asciz "kexec"
via_multiboot:	.asciz "multiboot"
via_disk:	.asciz "disk"
via_cd:		.asciz "cd"
via_loader:	.asciz "loader"
via_setup:	.asciz "setup"
via_bzimage:	.asciz "bzimage"
	.subsection 3
boot_drive:	.byte 0
boot_medium:	.byte 0
	.subsection 0
