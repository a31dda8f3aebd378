# steps.S: the step table.  One row per BIOS call (or built-in routine), in
# the order a kernel's real-mode setup and the classic kexec_test make them.
# The row index is the step number printed in the trace; the name is the
# stable step id the host uses (decoders, --hang-at, reports).  Adding a BIOS
# call is one line here and one decoder in kexectest/analysis/decoders/.
#
#	name		int	registers / flags / buffer / dump length ...

	.subsection 2
	.p2align 2
	.globl kt_steps
kt_steps:
	.subsection 0

	# -- state and repairs after the previous kernel
	STEP state, handler=h_state
	STEP apic-fix, handler=h_apic
	STEP pic-init, handler=h_pic
	STEP pit-init, handler=h_pit
	STEP nmi-mask, handler=h_nmi, flags=F_NMIOPT
	STEP idt-real, handler=h_idt
	STEP stack, handler=h_stack
	STEP sti, handler=h_sti

	# -- memory
	STEP base-mem, 0x12
	STEP e820, 0x15, eax=0xE820, ecx=24, edx=0x534D4150, flags=F_E820|F_ESDI, buf=buf_e820, dumplen=24
	STEP e801, 0x15, eax=0xE801
	STEP mem88, 0x15, eax=0x8800
	STEP cpu-mode-hint, 0x15, eax=0xEC00, ebx=2

	# -- A20: test, BIOS query/support/disable/enable, 8042, port 92h
	STEP a20-test, handler=h_a20test
	STEP a20-query, 0x15, eax=0x2402
	STEP a20-support, 0x15, eax=0x2403
	STEP a20-bios-disable, 0x15, eax=0x2400
	STEP a20-test-off, handler=h_a20test
	STEP a20-bios-enable, 0x15, eax=0x2401
	STEP a20-test-on, handler=h_a20test
	STEP a20-kbc, handler=h_a20kbc
	STEP a20-fast, handler=h_a20fast
	STEP a20-final, handler=h_a20test

	# -- keyboard
	STEP kbd-shift, 0x16, eax=0x0200
	STEP kbd-rate, 0x16, eax=0x0305, ebx=0
	STEP kbd-pending, 0x16, eax=0x0100
	STEP kbd-read, 0x16, eax=0x0000, flags=F_IFKEY
	STEP kbd-ext-shift, 0x16, eax=0x1200

	# -- system
	STEP sysconf, 0x15, eax=0xC000, flags=F_DUMPESBX, dumplen=16
	STEP equipment, 0x11
	STEP ist, 0x15, eax=0xE980, edx=0x47534943

	# -- APM: check, disconnect, connect real mode, version, enable, 32-bit
	STEP apm-check, 0x15, eax=0x5300, ebx=0
	STEP apm-disconnect, 0x15, eax=0x5304, ebx=0
	STEP apm-connect-rm, 0x15, eax=0x5301, ebx=0
	STEP apm-version, 0x15, eax=0x530E, ebx=0, ecx=0x0102
	STEP apm-enable, 0x15, eax=0x5308, ebx=1, ecx=1
	STEP apm-disconnect2, 0x15, eax=0x5304, ebx=0
	STEP apm-connect-32, 0x15, eax=0x5303, ebx=0
	STEP apm-disconnect3, 0x15, eax=0x5304, ebx=0

	# -- disks, once per BIOS hard disk
	STEP disk-reset, 0x13, eax=0x0000, flags=F_DRIVE
	STEP edd-check, 0x13, eax=0x4100, ebx=0x55AA, flags=F_DRIVE
	STEP edd-params, 0x13, eax=0x4800, flags=F_DRIVE|F_DSSI|F_PRE, buf=buf_main, dumplen=66, pre=0x0042
	STEP disk-geometry, 0x13, eax=0x0800, flags=F_DRIVE
	STEP dasd-type, 0x13, eax=0x1500, flags=F_DRIVE
	STEP read-chs, 0x13, eax=0x0201, ecx=0x0001, flags=F_DRIVE|F_ESBX, buf=buf_sector, dumplen=512
	STEP read-lba, 0x13, eax=0x4200, flags=F_DRIVE|F_DSSI, buf=dap, dump=buf_sector, dumplen=512
	STEP fdpt-hd0, handler=h_fdpt41, post=p_dumpfar
	STEP fdpt-hd1, handler=h_fdpt46, post=p_dumpfar

	# -- video
	STEP video-cursor, 0x10, eax=0x0300, ebx=0
	STEP video-mode, 0x10, eax=0x0F00
	STEP video-ega, 0x10, eax=0x1200, ebx=0x10
	STEP video-dcc, 0x10, eax=0x1A00
	STEP video-setmode, 0x10, eax=0x0003
	STEP video-font-8x14, 0x10, eax=0x1111, ebx=0
	STEP video-font-8x8, 0x10, eax=0x1112, ebx=0
	STEP video-font-8x16, 0x10, eax=0x1114, ebx=0
	STEP vbe-info, 0x10, eax=0x4F00, flags=F_ESDI|F_PRE, buf=buf_main, dumplen=512, pre=0x32454256, post=p_vbe
	STEP vbe-mode-info, 0x10, eax=0x4F01, ecx=0x0101, flags=F_ESDI, buf=buf_main, dumplen=256
	STEP vbe-set-mode, 0x10, eax=0x4F02, ebx=0x0003
	STEP ddc-caps, 0x10, eax=0x4F15, ebx=0
	STEP edid, 0x10, eax=0x4F15, ebx=1, ecx=0, edx=0, flags=F_ESDI, buf=buf_main, dumplen=128
	STEP video-teletype, 0x10, eax=0x0E4B, ebx=0x0007

	# -- time, PCI, waiting
	STEP ticks, 0x1A, eax=0x0000
	STEP rtc-time, 0x1A, eax=0x0200
	STEP rtc-date, 0x1A, eax=0x0400
	STEP pci-bios, 0x1A, eax=0xB101
	STEP pci-find-vga, 0x1A, eax=0xB103, ecx=0x030000
	STEP tick-advance, handler=h_ticks
	STEP wait, 0x15, eax=0x8600, ecx=0x0001, edx=0x86A0
	STEP ticks-after, 0x1A, eax=0x0000

	# -- optional: boot again through the firmware
	STEP int19-boot, 0x19, flags=F_OPTIN

	.subsection 2
	.globl kt_steps_end
kt_steps_end:
	.subsection 0
