# entry.S: the two entry points, the protected-mode prologue (state capture,
# UART, banner, local APIC repair) and the descent to real mode.

# ---------------------------------------------------------------- 64-bit entry
# The raw kexec_load syscall on an x86_64 kernel jumps here in long mode with
# identity-mapped paging, CS 0x10 of the kernel's GDT, RSP somewhere in RAM.
# Only RIP-relative addressing: an ELF32 object cannot hold 64-bit absolute
# relocations.
	.code64
	.globl kt_entry64
kt_entry64:
	cli
	cld
	movl %eax, s_eax(%rip)
	movl %ebx, s_ebx(%rip)
	movl %ecx, s_ecx(%rip)
	movl %edx, s_edx(%rip)
	movl %esi, s_esi(%rip)
	movl %edi, s_edi(%rip)
	movl %ebp, s_ebp(%rip)
	movq %rsp, %rax
	movl %eax, s_esp(%rip)
	movl $(KT_BASE + STACK_TOP), %esp	# zero-extends: our stack, below 4 GiB
	pushfq
	popq %rax
	movl %eax, s_eflags(%rip)
	movq %cr0, %rax
	movl %eax, s_cr0(%rip)
	movq %cr3, %rax
	movl %eax, s_cr3(%rip)
	movq %cr4, %rax
	movl %eax, s_cr4(%rip)
	movl $0xC0000080, %ecx			# EFER always exists in long mode
	rdmsr
	movl %eax, s_efer(%rip)
	movb $1, s_efer_ok(%rip)
	sgdt s_gdtr(%rip)
	sidt s_idtr(%rip)
	movb $64, entry_mode(%rip)
	lgdt gdt_desc64(%rip)
	pushq $0x08				# our flat 32-bit code segment:
	leaq compat32(%rip), %rax		# lretq lands in compatibility mode
	pushq %rax
	lretq

	.code32
compat32:					# (common32 loads the data segments:
	movl %cr0, %eax				# no memory access before it)
	andl $0x7FFFFFFF, %eax			# paging off: leaves long mode
	movl %eax, %cr0
	movl $0xC0000080, %ecx			# EFER.LME off
	rdmsr
	andl $~0x100, %eax
	wrmsr
	movl %cr4, %eax				# PAE (and LA57) off
	andl $~0x1020, %eax
	movl %eax, %cr4
	jmp common32

# ---------------------------------------------------------------- 32-bit entry
# Flat 32-bit protected mode, paging off (kexec-tools purgatory, multiboot,
# i386 relocate_kernel).  ESP is undefined under multiboot: save it first.
	.globl kt_entry32
kt_entry32:
	cli
	cld
	movl %eax, s_eax
	movl %ebx, s_ebx
	movl %ecx, s_ecx
	movl %edx, s_edx
	movl %esi, s_esi
	movl %edi, s_edi
	movl %ebp, s_ebp
	movl %esp, s_esp
	movl $(KT_BASE + STACK_TOP), %esp
	pushfl
	popl s_eflags
	movl %cr0, %eax
	movl %eax, s_cr0
	movl %cr3, %eax
	movl %eax, s_cr3
	movl %cr4, %eax
	movl %eax, s_cr4
	sgdt s_gdtr
	sidt s_idtr
	movb $32, entry_mode
	# EFER exists only where CPUID 80000001h reports LM, NX or SYSCALL.
	movl $0x80000000, %eax
	cpuid
	cmpl $0x80000001, %eax
	jb 1f
	movl $0x80000001, %eax
	cpuid
	testl $((1 << 29) | (1 << 20) | (1 << 11)), %edx
	jz 1f
	movl $0xC0000080, %ecx
	rdmsr
	movl %eax, s_efer
	movb $1, s_efer_ok
1:
	lgdt gdt_desc
	ljmp $0x08, $common32

# --------------------------------------------------------- common 32-bit path
common32:
	movl $0x10, %eax
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %ss
	movw %ax, %fs
	movw %ax, %gs
	movl $(KT_BASE + STACK_TOP), %esp
	inb $0x21, %al				# 8259 masks as the kernel left them
	movb %al, s_pic1
	inb $0xA1, %al
	movb %al, s_pic2
	call uart_init32
	cmpl $0x3931544B, 0x4F0			# 'KT19': we chained to int 19h and
	je int19_again				# the firmware booted us once more
	call banner32
	call bootparams32			# the hand-off page, if a loader gave one
	call apic_fix32
	# Descend: real-mode IVT descriptor first, then 16-bit protected mode
	# with 64 KiB segments, then clear CR0.PE and reload CS.
	lidt rm_idt
	ljmp $0x18, $(pm16 - K0)

# Entered again through the firmware's bootstrap (int 19h) after a run that
# chained to it: the BIOS could boot after everything.  Say so and stop.
int19_again:
	movl $0, 0x4F0
	call line_begin32
	PUTS32 "boot via=int19"
	call line_end32
	testl $C_DEBUGEXIT, cfg_flags
	jz 1f
	movw cfg_dbgport, %dx
	movb $0x31, %al
	outb %al, %dx
1:	hlt
	jmp 1b

# Capture IA32_APIC_BASE, SVR, LVT0, LVT1; when the local APIC is not in
# virtual-wire mode (software-disabled, or LINT0 masked / not ExtINT), the
# 8259's interrupts never reach the CPU and the BIOS timer stops: program
# SVR enable, LVT0 ExtINT, LVT1 NMI.  xAPIC by MMIO, x2APIC by MSR.
apic_fix32:
	movl $1, %eax
	cpuid
	testl $(1 << 9), %edx
	jz 9f
	movl $0x1B, %ecx
	rdmsr
	movl %eax, s_apic_msr
	movb $1, s_apic_present
	testl $(1 << 11), %eax			# globally disabled: leave it
	jz 9f
	testl $(1 << 10), %eax
	jnz 5f
	andl $0xFFFFF000, %eax			# xAPIC
	movl %eax, %ebx
	movl 0xF0(%ebx), %eax
	movl %eax, s_svr
	movl 0x350(%ebx), %eax
	movl %eax, s_lvt0
	movl 0x360(%ebx), %eax
	movl %eax, s_lvt1
	call apic_needs_fix32
	jnc 2f
	movl s_svr, %eax
	orl $0x100, %eax
	movl %eax, 0xF0(%ebx)
	movl $0x700, 0x350(%ebx)
	movl $0x400, 0x360(%ebx)
	movb $1, s_apic_fixed
2:	movl 0xF0(%ebx), %eax
	movl %eax, s_svr2
	movl 0x350(%ebx), %eax
	movl %eax, s_lvt02
	movl 0x360(%ebx), %eax
	movl %eax, s_lvt12
	ret
5:	movl $0x80F, %ecx			# x2APIC registers as MSRs
	rdmsr
	movl %eax, s_svr
	movl $0x835, %ecx
	rdmsr
	movl %eax, s_lvt0
	movl $0x836, %ecx
	rdmsr
	movl %eax, s_lvt1
	call apic_needs_fix32
	jnc 6f
	movl $0x80F, %ecx
	movl s_svr, %eax
	orl $0x100, %eax
	xorl %edx, %edx
	wrmsr
	movl $0x835, %ecx
	movl $0x700, %eax
	wrmsr
	movl $0x836, %ecx
	movl $0x400, %eax
	wrmsr
	movb $1, s_apic_fixed
6:	movl $0x80F, %ecx
	rdmsr
	movl %eax, s_svr2
	movl $0x835, %ecx
	rdmsr
	movl %eax, s_lvt02
	movl $0x836, %ecx
	rdmsr
	movl %eax, s_lvt12
9:	ret

# CF=1 when SVR is software-disabled or LVT0 is masked or not ExtINT.
apic_needs_fix32:
	testl $0x100, s_svr
	jz 1f
	movl s_lvt0, %eax
	testl $0x10000, %eax
	jnz 1f
	andl $0x700, %eax
	cmpl $0x700, %eax
	jne 1f
	clc
	ret
1:	stc
	ret

# ------------------------------------------------------ down to real mode
	.code16
pm16:
	movw $0x20, %ax				# 16-bit data, base KT_BASE, 64 KiB
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %ss
	movw %ax, %fs
	movw %ax, %gs
	movl %cr0, %eax
	andl $~1, %eax
	movl %eax, %cr0
	ljmp $RM_SEG, $(rm_entry - K0)

rm_entry:
	movw $RM_SEG, %ax
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %ss
	movw $STACK_TOP, %sp
	xorw %ax, %ax
	movw %ax, %fs
	movw %ax, %gs
	cld
	call line_begin
	PUTS "mode real"
	call line_end
	call tsc_init				# calibrate the call timer (tsc.S)
	call run_steps
	call print_done
	testl $C_DEBUGEXIT, cfg_flags - K0
	jz 1f
	movw cfg_dbgport - K0, %dx		# QEMU isa-debug-exit: end at once
	movb $0x31, %al
	outb %al, %dx
1:	cli
	hlt
	jmp 1b
