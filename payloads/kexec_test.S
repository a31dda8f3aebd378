# kexectest payload: does the BIOS still work after kexec?
#
# Entered through kexec in 32-bit protected mode (kt_entry32: kexec-tools'
# elf-x86 type, multiboot, an i386 kernel) or 64-bit long mode (kt_entry64:
# the raw kexec_load syscall on x86_64).  It records the machine state it
# was left in, repairs what the previous kernel broke for the BIOS (local
# APIC, 8259 PICs, PIT, IDT, stack), drops to real mode and runs the step
# table in steps.S: every BIOS call a kernel's real-mode setup makes, each
# framed by a begin line before and an end line after, so a hang names its
# call.  Output: a 16550 UART by port I/O (docs/trace-format.md).
#
# Layout: everything lives in .text, linked at KT_BASE (0x20000), so 16-bit
# code addresses any label as `label - K0` (an assembly-time constant) with
# DS = ES = SS = 0x2000.  Subsections: 0 code, 1 strings and constant data,
# 2 the step table, 3 variables and buffers (zero in the file).

	.set KT_BASE, 0x20000
	.globl KT_BASE
	.set RM_SEG, 0x2000		# real-mode segment of KT_BASE
	.set STACK_TOP, 0xFFF0		# stack: top of our 64 KiB segment
	.set KT_STEP_SIZE, 36
	.globl KT_STEP_SIZE

	# configuration flags (kt_config + 12)
	.set C_VGA, 0x01
	.set C_E9, 0x02
	.set C_INT19, 0x04
	.set C_DEBUGEXIT, 0x08
	.set C_NMI, 0x10
	.set C_KEEPUART, 0x20

	.text
	.globl kt_start
kt_start:
K0:
	# Multiboot header: lets QEMU -kernel (and GRUB) boot the payload
	# straight from the firmware, the fast path for tests.
	.p2align 2
kt_multiboot:
	.long 0x1BADB002
	.long 0x00000000
	.long -(0x1BADB002 + 0x00000000)

	.include "macros.S"
	.include "entry.S"
	.include "entry16.S"
	.include "bootparams.S"
	.include "io.S"
	.include "builtins.S"
	.include "pci.S"
	.include "runner.S"
	.include "tsc.S"
	.include "steps.S"
	.include "data.S"
	.include "bzimage.S"
