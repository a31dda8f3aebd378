# data.S: the configuration block the host patches, descriptor tables, and
# the variables and buffers (subsection 3: zero in the file, so a fresh load
# always starts clean).

	.subsection 1
	.globl kt_version
kt_version:	.asciz "0.1.0"

# Configuration block (docs/payload.md); `kexectest load/build` patch it.
	.p2align 2
	.globl kt_config
kt_config:
	.ascii "KTCF"
	.word 1				# layout version
	.word 64			# block size
cfg_uart:	.word 0x3F8		# UART I/O base (COM1)
cfg_div:	.word 1			# divisor: 115200 baud
cfg_flags:	.long 0
cfg_hang:	.word 0xFFFF		# step index to hang at
cfg_reset:	.word 0xFFFF		# step index to triple-fault at
cfg_dbgport:	.word 0xF4		# QEMU isa-debug-exit
cfg_mask1:	.byte 0xB8		# 8259 master: IRQ 0, 1, 2, 6 on
cfg_mask2:	.byte 0x2E		# 8259 slave: IRQ 8, 12, 14, 15 on
cfg_skip:	.fill 32, 1, 0		# bit N: skip step N
cfg_maxdrv:	.word 4			# BIOS hard disks probed at most
	.fill 6, 1, 0
kt_config_end:

# GDT: flat 32-bit code/data, 16-bit code/data at KT_BASE, 64-bit code.
	.p2align 3
gdt:
	.quad 0
	.quad 0x00CF9A000000FFFF	# 0x08 code32 flat
	.quad 0x00CF92000000FFFF	# 0x10 data32 flat
	.quad 0x00009A020000FFFF	# 0x18 code16, base 0x20000, 64 KiB
	.quad 0x000092020000FFFF	# 0x20 data16, base 0x20000, 64 KiB
	.quad 0x00AF9A000000FFFF	# 0x28 code64
gdt_end:
gdt_desc:
	.word gdt_end - gdt - 1
	.long gdt
gdt_desc64:
	.word gdt_end - gdt - 1
	.long gdt, 0
rm_idt:
	.word 0x3FF			# the real-mode interrupt vector table
	.long 0
zero_idt:
	.word 0				# for the injected reset: any int faults
	.long 0

# Disk address packet for int 13h AH=42h: one sector, LBA 1, to buf_sector.
	.p2align 2
dap:
	.byte 0x10, 0
	.word 1
	.word buf_sector - K0, RM_SEG
	.quad 1

	.subsection 3
	.p2align 4
# entry state, captured before anything is touched
s_eax:		.long 0
s_ebx:		.long 0
s_ecx:		.long 0
s_edx:		.long 0
s_esi:		.long 0
s_edi:		.long 0
s_esp:		.long 0
s_ebp:		.long 0
s_eflags:	.long 0
s_cr0:		.long 0
s_cr3:		.long 0
s_cr4:		.long 0
s_efer:		.long 0
s_gdtr:		.fill 10, 1, 0
s_idtr:		.fill 10, 1, 0
s_apic_msr:	.long 0
s_svr:		.long 0
s_lvt0:		.long 0
s_lvt1:		.long 0
s_svr2:		.long 0
s_lvt02:	.long 0
s_lvt12:	.long 0
s_efer_ok:	.byte 0
s_apic_present:	.byte 0
s_apic_fixed:	.byte 0
s_pic1:		.byte 0
s_pic2:		.byte 0
entry_mode:	.byte 0

# output
ck_on:		.byte 0
ck_s1:		.byte 0
ck_s2:		.byte 0
done_printed:	.byte 0
	.p2align 1
vga_pos:	.word 0
d_off:		.word 0
d_len:		.word 0
d_pos:		.word 0
d_chunk:	.word 0
d_tag:		.word 0

# the interpreter
cur_row:	.word 0
cur_idx:	.word 0
cur_iter:	.word 0
last_fl:	.word 0
err_count:	.word 0
saved_sp:	.word 0
iter_kind:	.byte 0			# 0 once, 1 per drive, 2 E820
cur_drive:	.byte 0
drv_count:	.byte 0
	.p2align 2
e820_next:	.long 0
in_eax:		.long 0
in_ebx:		.long 0
in_ecx:		.long 0
in_edx:		.long 0
in_esi:		.long 0
in_edi:		.long 0
res_eax:	.long 0
res_ebx:	.long 0
res_ecx:	.long 0
res_edx:	.long 0
res_esi:	.long 0
res_edi:	.long 0
res_ds:		.word 0
res_es:		.word 0
res_fl:		.word 0
res_end:

# the PCI scan (pci.S); the two bus maps stay adjacent (cleared together)
	.p2align 2
pci_cf8:	.long 0			# CF8h at entry, restored after the scan
pci_id:		.long 0
pci_busregs:	.long 0
pci_bus:	.byte 0
pci_devfn:	.byte 0
pci_hdr:	.byte 0
pci_queued:	.fill 32, 1, 0		# bit N: bus N is behind a bridge seen
pci_done:	.fill 32, 1, 0		# bit N: bus N scanned

# buffers the BIOS fills
	.p2align 4
buf_e820:	.fill 32, 1, 0
buf_main:	.fill 512, 1, 0
buf_sector:	.fill 512, 1, 0
	.subsection 0
