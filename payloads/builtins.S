# builtins.S: the steps that are not one BIOS call -- the machine-state dump,
# the repairs after the previous kernel (PIC, PIT, NMI, IDT, stack, sti), the
# A20 tests and gates, the timer check.  Each leaves its results in res_*
# (printed as the step's end line; meanings in docs/trace-format.md).
	.code16

h_state:					# KT state <group> key=value ...
	call line_begin
	PUTS "state regs"
	REGFIELDS s_
	FIELD esp, s_esp-K0, 8
	FIELD ebp, s_ebp-K0, 8
	FIELD eflags, s_eflags-K0, 8
	call line_end

	call line_begin
	PUTS "state cpu"
	FIELD cr0, s_cr0-K0, 8
	FIELD cr3, s_cr3-K0, 8
	FIELD cr4, s_cr4-K0, 8
	cmpb $0, s_efer_ok - K0
	je 1f
	FIELD efer, s_efer-K0, 8
1:	call line_end

	call line_begin
	PUTS "state desc"
	FIELDW gdt_limit, s_gdtr-K0
	FIELD gdt_base, s_gdtr+2-K0, 8
	FIELD gdt_base_hi, s_gdtr+6-K0, 8
	FIELDW idt_limit, s_idtr-K0
	FIELD idt_base, s_idtr+2-K0, 8
	FIELD idt_base_hi, s_idtr+6-K0, 8
	call line_end

	call line_begin
	PUTS "state apic"
	cmpb $0, s_apic_present - K0
	jne 2f
	PUTS " present=0"
	jmp 3f
2:	PUTS " present=1"
	FIELD msr, s_apic_msr-K0, 8
	FIELD svr, s_svr-K0, 8
	FIELD lvt0, s_lvt0-K0, 8
	FIELD lvt1, s_lvt1-K0, 8
	movzbl s_apic_fixed - K0, %eax
	FIELD fixed, %eax, 1
	FIELD svr2, s_svr2-K0, 8
	FIELD lvt02, s_lvt02-K0, 8
	FIELD lvt12, s_lvt12-K0, 8
3:	call line_end

	call line_begin
	PUTS "state pic"
	movzbl s_pic1 - K0, %eax
	FIELD mask1, %eax, 2
	movzbl s_pic2 - K0, %eax
	FIELD mask2, %eax, 2
	call line_end

	pushw %fs					# BDA and IVT through FS = 0
	xorw %ax, %ax
	movw %ax, %fs
	call line_begin
	PUTS "state bda"
	FIELDW basemem, %fs:0x413
	FIELDW ebda, %fs:0x40E
	FIELDW com1, %fs:0x400
	movzbl %fs:0x475, %eax
	FIELD hdcount, %eax, 2
	FIELDW equip, %fs:0x410
	FIELD ticks, %fs:0x46C, 8
	call line_end

	call line_begin
	PUTS "state ivt"
	FARPTR v08, %fs:0x08*4
	FARPTR v10, %fs:0x10*4
	FARPTR v13, %fs:0x13*4
	FARPTR v15, %fs:0x15*4
	FARPTR v16, %fs:0x16*4
	FARPTR v19, %fs:0x19*4
	FARPTR v1A, %fs:0x1A*4
	FARPTR v41, %fs:0x41*4
	FARPTR v46, %fs:0x46*4
	call line_end
	popw %fs
	call pci_scan				# KT state pci / pcifn (pci.S)
	ret

h_apic:						# the repair was done in protected mode
	movl s_svr - K0, %eax
	movl %eax, res_eax - K0
	movl s_svr2 - K0, %eax
	movl %eax, res_ebx - K0
	movl s_lvt02 - K0, %eax
	movl %eax, res_ecx - K0
	movzbl s_apic_fixed - K0, %eax
	movl %eax, res_edx - K0
	ret

io_delay:
	outb %al, $0x80
	ret

h_pic:						# full ICW1-4 re-init to 08h / 70h
	inb $0xA1, %al
	movb %al, %ah
	inb $0x21, %al
	movw %ax, res_eax - K0
	movb $0x11, %al				# ICW1: edge, cascade, ICW4 follows
	outb %al, $0x20
	call io_delay
	outb %al, $0xA0
	call io_delay
	movb $0x08, %al				# ICW2: vector bases
	outb %al, $0x21
	call io_delay
	movb $0x70, %al
	outb %al, $0xA1
	call io_delay
	movb $0x04, %al				# ICW3: slave on IRQ2
	outb %al, $0x21
	call io_delay
	movb $0x02, %al
	outb %al, $0xA1
	call io_delay
	movb $0x01, %al				# ICW4: 8086 mode
	outb %al, $0x21
	call io_delay
	outb %al, $0xA1
	call io_delay
	movb cfg_mask1 - K0, %al		# the BIOS's masks
	outb %al, $0x21
	movb cfg_mask2 - K0, %al
	outb %al, $0xA1
	call io_delay
	inb $0xA1, %al
	movb %al, %ah
	inb $0x21, %al
	movw %ax, res_ebx - K0
	ret

h_pit:						# channel 0, mode 3, divisor 65536
	movb $0x36, %al
	outb %al, $0x43
	call io_delay
	xorb %al, %al
	outb %al, $0x40
	call io_delay
	outb %al, $0x40
	movl $0x36, res_eax - K0
	ret

h_nmi:						# CMOS index port bit 7 masks NMI
	movb $0x8D, %al
	outb %al, $0x70
	call io_delay
	inb $0x71, %al
	movl $1, res_eax - K0
	ret

h_idt:						# the real-mode IVT: base 0, limit 3FFh
	movl s_idtr + 2 - K0, %eax
	movl %eax, res_eax - K0
	movzwl s_idtr - K0, %eax
	movl %eax, res_ebx - K0
	lidt rm_idt - K0
	ret

h_stack:
	movw %ss, res_eax - K0
	movw %sp, res_ebx - K0
	ret

h_sti:						# enable interrupts, let pending ones run
	sti
	movw $0x4000, %cx
1:	outb %al, $0x80
	loop 1b
	movl $1, res_eax - K0
	ret

# AX = 1 when A20 is on: a word at 0000:0200 and its alias FFFF:0210
# (1 MiB higher) differ after the low one changes.
a20_check:
	pushw %fs
	pushw %gs
	pushw %bx
	pushw %cx
	xorw %ax, %ax
	movw %ax, %fs
	decw %ax
	movw %ax, %gs
	movw %fs:0x200, %bx
	movw $32, %cx
1:	movw %fs:0x200, %ax
	incw %ax
	movw %ax, %fs:0x200
	call io_delay
	cmpw %gs:0x210, %ax
	jne 2f
	loop 1b
	xorw %ax, %ax
	jmp 3f
2:	movw $1, %ax
3:	movw %bx, %fs:0x200
	popw %cx
	popw %bx
	popw %gs
	popw %fs
	ret

h_a20test:
	call a20_check
	movw %ax, res_eax - K0
	ret

kbc_wait:					# CF=1 on timeout; drains output
	pushw %cx
	pushw %ax
	movw $0xFFFF, %cx
1:	inb $0x64, %al
	cmpb $0xFF, %al				# no controller
	je 3f
	testb $1, %al
	jz 2f
	inb $0x60, %al				# drain a pending byte
	jmp 4f
2:	testb $2, %al
	jz 5f
4:	call io_delay
	loop 1b
3:	popw %ax
	popw %cx
	stc
	ret
5:	popw %ax
	popw %cx
	clc
	ret

h_a20kbc:					# 8042 output port: D1h then DFh
	call kbc_wait
	jc 9f
	movb $0xD1, %al
	outb %al, $0x64
	call kbc_wait
	jc 9f
	movb $0xDF, %al
	outb %al, $0x60
	call kbc_wait
	jc 9f
	movb $0xFF, %al				# null command (some USB legacy needs it)
	outb %al, $0x64
	call kbc_wait
	jc 9f
	movl $1, res_eax - K0
	call a20_check
	movw %ax, res_ebx - K0
	ret
9:	movw $1, res_fl - K0
	call a20_check
	movw %ax, res_ebx - K0
	ret

h_a20fast:					# port 92h bit 1, never bit 0 (reset)
	inb $0x92, %al
	movb %al, res_eax - K0
	orb $0x02, %al
	andb $0xFE, %al
	outb %al, $0x92
	call a20_check
	movw %ax, res_ebx - K0
	ret

h_fdpt41:					# far pointers in IVT 41h / 46h:
	movl $0x41*4, %ebx			# fixed-disk parameter tables
	jmp 1f
h_fdpt46:
	movl $0x46*4, %ebx
1:	pushw %fs
	xorw %ax, %ax
	movw %ax, %fs
	movl %fs:(%bx), %eax
	popw %fs
	movl %eax, res_eax - K0
	ret

# Post routine: dump 16 bytes at the far pointer in res_eax.
p_dumpfar:
	movl res_eax - K0, %eax
	movw %ax, %bx
	shrl $16, %eax
	movw $16, %cx
	xorw %di, %di
	call dump
	ret

# BDA tick count across ~220 ms of busy waiting timed by PIT channel 0's
# counter (read by latching, independent of interrupts): a count that does
# not move means IRQ0 never reaches the BIOS.  In mode 3 the counter runs
# down by 2 per 1.19 MHz clock, so 8 x 65536 counts are four 55 ms ticks.
# Interrupts on first: a BIOS call before may return with IF=0 (the Bochs
# BIOS's int 1Ah PCI functions do), and IRQ0 is what this step measures.
h_ticks:
	sti
	pushw %fs
	xorw %ax, %ax
	movw %ax, %fs
	movl %fs:0x46C, %eax
	movl %eax, res_eax - K0
	call pit_count
	movw %ax, %bx
	xorl %esi, %esi				# counts elapsed
	movl $0x01000000, %edi			# bound: a stopped PIT ends the wait
1:	call pit_count
	movw %bx, %dx
	subw %ax, %dx
	movw %ax, %bx
	movzwl %dx, %edx
	addl %edx, %esi
	cmpl $0x80000, %esi
	jae 2f
	decl %edi
	jnz 1b
2:	movl %fs:0x46C, %eax
	movl %eax, res_ebx - K0
	subl res_eax - K0, %eax
	movl %eax, res_ecx - K0
	movl %esi, res_edx - K0
	jnz 5f
	movw $1, res_fl - K0
5:	popw %fs
	ret

pit_count:					# AX = PIT channel 0 count
	xorb %al, %al				# latch counter 0
	outb %al, $0x43
	inb $0x40, %al
	movb %al, %ah
	inb $0x40, %al
	xchgb %al, %ah
	ret

# Post routine for vbe-info: the strings and the mode list live behind far
# pointers in the 512-byte block (often in the video ROM): dump them too.
p_vbe:
	cmpw $0x004F, res_eax - K0
	jne 9f
	movw $(vbe_ptrs - K0), %bx
1:	movw (%bx), %si				# offset of a far pointer in the block
	testw %si, %si
	jz 9f
	addw $(buf_main - K0), %si
	movw 2(%bx), %di			# its tag
	pushw %bx
	call dump_far64
	popw %bx
	addw $4, %bx
	jmp 1b
9:	ret

dump_far64:					# SI -> far pointer, DI = tag
	movw (%si), %bx
	movw 2(%si), %ax
	movw %ax, %dx
	orw %bx, %dx
	jz 1f					# null pointer: nothing to show
	movw $64, %cx
	call dump
1:	ret

	.subsection 1
vbe_ptrs:					# VBE info block: far pointer offsets
	.word 6, tag_oem - K0
	.word 22, tag_vendor - K0
	.word 26, tag_product - K0
	.word 30, tag_rev - K0
	.word 14, tag_modes - K0
	.word 0
tag_oem:	.asciz "oem"
tag_vendor:	.asciz "vendor"
tag_product:	.asciz "product"
tag_rev:	.asciz "rev"
tag_modes:	.asciz "modes"
	.subsection 0
