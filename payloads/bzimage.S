# bzimage.S: the payload's doors as a Linux bzImage (docs/payload.md, "The bzImage").
#
# kexectest/payload/bzimage.py makes the file: a boot sector and setup header
# (written by the host from the boot protocol's rules), the real-mode code
# below at setup offset BZ_SETUP_CODE, the load segment again at setup offset
# BZ_SETUP_BLOB, then the protected-mode part: the two entries below
# (section .kt_bzpm, never loaded with the ELF) followed by the load segment
# at BZ_PM_BLOB.  Every entry copies the load segment to KT_BASE and joins
# the ELF's own entry for its mode, with the registers it was given, so the
# state dump records what the loader left.  Both sections are never part of
# the ELF's load segment: they cost the payload nothing.

	.set BZ_SETUP_CODE, 0x268	# the end of a protocol 2.12 setup header
	.set BZ_SETUP_BLOB, 0x400
	.set BZ_PM_BLOB, 0x400
	.set BZ_SCRATCH, KT_BASE + 0xE000	# under the stack, past the load segment
	.globl BZ_SETUP_CODE, BZ_SETUP_BLOB, BZ_PM_BLOB

# ------------------------------------------------- real mode: setup start + 0x200
# A real-mode loader (kexec-tools --real-mode, QEMU -kernel, GRUB linux16)
# loads the setup part at X:0 below 1 MiB and jumps to (X + 20h):0, the
# header's jump, which lands here.  The load segment is copied to 2000:0 (in
# the direction that survives an overlap) and kt_entry16 entered with BL = 2
# (banner via=setup).  Setup code inside KT_BASE's 64 KiB would be overwritten
# by the copy: then one line on the screen (int 10h) and a halt.
	.section .kt_bzsetup, "", @progbits
	.code16
	.globl kt_bz_setup
kt_bz_setup:
	cli
	cld
	pushal
	pushw %ds
	pushw %es
	call 1f
1:	popw %bx			# IP of 1b; CS:IP is the setup's linear address
	movzwl %bx, %ebx
	xorl %eax, %eax
	movw %cs, %ax
	shll $4, %eax
	addl %ebx, %eax
	leal (kt_bz_setup - 1b)(%eax), %edx	# linear start of this code
	addl $(BZ_SETUP_BLOB - 1b), %eax	# linear source
	cmpl $(KT_BASE + 0x10000), %edx
	jae 2f
	cmpl $(KT_BASE - (bz_setup_end - kt_bz_setup)), %edx
	ja 8f
2:	movl $(kt_end - KT_BASE), %ecx
	pushw $(KT_BASE >> 4)		# (EDX keeps this code's address)
	popw %es
	xorw %di, %di
	movl %eax, %esi
	shrl $4, %eax			# DS:SI = the source, SI < 16
	movw %ax, %ds
	andl $0x0F, %esi
	cmpw $(KT_BASE >> 4), %ax
	jae 3f
	addw %cx, %si			# source below the destination: copy
	decw %si			# backwards, last byte first
	movw %cx, %di
	decw %di
	std
3:	rep movsb
	cld
	subl $kt_bz_setup, %edx		# the setup's own base, linear: its page
	movl %edx, %es:(bz_page - K0)	# (boot_params, as a real-mode loader
					# fills it) for bootparams.S
	movb $3, %es:(bz_door - K0)
	popw %es
	popw %ds
	popal
	movb $2, %bl
	ljmp $(KT_BASE >> 4), $(kt_entry16 - K0)
8:	movw $(bz_overlap - 1b), %si	# one line on the screen, then halt
	addw %bx, %si
	pushw %cs
	popw %ds
4:	lodsb
	testb %al, %al
	jz 5f
	movb $0x0E, %ah
	movw $7, %bx
	int $0x10
	jmp 4b
5:	hlt
	jmp 5b
bz_overlap:
	.asciz "kexectest: setup code loaded inside 20000h-2FFFFh, where the payload runs\r\n"
bz_setup_end:

# ------------------------------------------ protected-mode part: offset 0, +0x200
# 32-bit entry (code32_start; the 32-bit boot protocol): flat protected mode,
# paging off, ESI = boot_params, no stack promised.  Registers go to scratch
# memory under the payload's stack, the code finds itself with call/pop, and
# the jump to kt_entry32 is through memory, so every register reaches it as
# the loader left it (DF cleared).
	.section .kt_bzpm, "", @progbits
	.code32
	.globl kt_bz_entry32
kt_bz_entry32:
	movl %esp, BZ_SCRATCH
	movl %esi, BZ_SCRATCH + 4
	movl %edi, BZ_SCRATCH + 8
	movl %ecx, BZ_SCRATCH + 12
	movl $kt_entry32, BZ_SCRATCH + 16
	movl $(BZ_SCRATCH + 0x100), %esp
	call 1f
1:	popl %esi
	addl $(BZ_PM_BLOB - (1b - kt_bz_entry32)), %esi
	movl $KT_BASE, %edi
	movl $(kt_end - KT_BASE), %ecx
	cld
	rep movsb
	movb $1, bz_door
	movl BZ_SCRATCH + 4, %eax		# ESI: the boot_params page
	movl %eax, bz_page
	movl BZ_SCRATCH + 12, %ecx
	movl BZ_SCRATCH + 8, %edi
	movl BZ_SCRATCH + 4, %esi
	movl BZ_SCRATCH, %esp
	jmp *BZ_SCRATCH + 16

# 64-bit entry, at +0x200 (kexec_file_load's purgatory; the 64-bit boot
# protocol): long mode, identity-mapped paging, RSI = boot_params, a stack.
# The part may lie anywhere, above 4 GiB too: RIP-relative source, absolute
# destination (KT_BASE is identity-mapped like all RAM).  RSI, RDI, RCX, RAX wait
# in R8-R11 (the state dump records the low eight registers).
	.org kt_bz_entry32 + 0x200
	.code64
	.globl kt_bz_entry64
kt_bz_entry64:
	movq %rsi, %r8
	movq %rdi, %r9
	movq %rcx, %r10
	movq %rax, %r11
	leaq (kt_bz_entry32 + BZ_PM_BLOB)(%rip), %rsi
	movl $KT_BASE, %edi
	movl $(kt_end - KT_BASE), %ecx
	cld
	rep movsb
	movl $bz_door, %eax		# (ELF32 holds no sign-extended absolute:
	movb $2, (%rax)			# zero-extended through a register)
	movq %r8, %rcx			# RSI's high half: a boot_params page above
	shrq $32, %rcx			# 4 GiB is out of the dump's reach
	movl $bz_rsi_hi, %eax
	movl %ecx, (%rax)
	movl $bz_page, %eax
	movl %r8d, (%rax)
	movl $kt_entry64, %eax
	pushq %rax
	movq %r11, %rax
	movq %r10, %rcx
	movq %r9, %rdi
	movq %r8, %rsi
	ret
	.org kt_bz_entry32 + BZ_PM_BLOB
	.code32

	.text
	.subsection 3
bz_door:	.byte 0			# the bzImage's entry: 1 32-bit, 2 64-bit, 3 real mode
	.p2align 2
bz_page:	.long 0			# the boot_params page it was handed (low 32 bits)
	.subsection 0
