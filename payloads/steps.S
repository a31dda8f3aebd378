# steps.S: the step table.  One STEP line per BIOS call (or built-in routine),
# in the order a kernel's real-mode setup and the classic kexec_test make them.
# The row index is the step number printed in the trace; the id is the stable
# name the host uses (decoders, --hang-at, reports); title, fn and need are read
# by the host from the ELF (macros.S, STEP), and so is the GROUP (the BIOS concern)
# of the STEP lines below it.  How to add a step: docs/payload.md.
#
#	id, int, title, fn (function registers), inputs / flags / buffer ..., need

	.subsection 2
	.p2align 2
	.globl kt_steps
kt_steps:
	.subsection 0

	# -- state and repairs after the previous kernel
	GROUP state
	STEP state, title="machine state at entry", handler=h_state
	STEP apic-fix, title="local APIC repair (virtual wire)", handler=h_apic
	STEP pic-init, title="8259 PIC re-initialisation", handler=h_pic
	STEP pit-init, title="PIT channel 0 to 18.2 Hz", handler=h_pit
	STEP nmi-mask, title="mask NMI", handler=h_nmi, flags=F_NMIOPT
	STEP idt-real, title="real-mode IDT 0:3FF", handler=h_idt
	STEP stack, title="real-mode stack", handler=h_stack
	STEP sti, title="enable interrupts", handler=h_sti

	# -- memory
	GROUP memory
	STEP base-mem, 0x12, title="base memory size"
	STEP e820, 0x15, title="E820 memory map", fn=AX, eax=0xE820, ecx=24, edx=0x534D4150, flags=F_E820|F_ESDI, buf=buf_e820, dumplen=24
	STEP e801, 0x15, title="E801 memory size", fn=AX, eax=0xE801
	STEP mem88, 0x15, title="extended memory size (88h)", fn=AH, eax=0x8800
	STEP cpu-mode-hint, 0x15, title="CPU long-mode hint", fn=AX, eax=0xEC00, ebx=2, need=optional

	# -- A20: test, BIOS query/support/disable/enable, 8042, port 92h
	GROUP A20
	STEP a20-test, title="A20 wrap-around test", handler=h_a20test
	STEP a20-query, 0x15, title="A20 gate status", fn=AX, eax=0x2402, need=optional
	STEP a20-support, 0x15, title="A20 gate support", fn=AX, eax=0x2403, need=optional
	STEP a20-bios-disable, 0x15, title="A20 disable (BIOS)", fn=AX, eax=0x2400, need=optional
	STEP a20-test-off, title="A20 test after BIOS disable", handler=h_a20test
	STEP a20-bios-enable, 0x15, title="A20 enable (BIOS)", fn=AX, eax=0x2401, need=optional
	STEP a20-test-on, title="A20 test after BIOS enable", handler=h_a20test
	STEP a20-kbc, title="A20 enable via keyboard controller", handler=h_a20kbc
	STEP a20-fast, title="A20 enable via port 92h", handler=h_a20fast
	STEP a20-final, title="A20 final state", handler=h_a20test

	# -- keyboard
	GROUP keyboard
	STEP kbd-shift, 0x16, title="keyboard shift flags", fn=AH, eax=0x0200
	STEP kbd-rate, 0x16, title="keyboard repeat rate", fn=AX, eax=0x0305, ebx=0
	STEP kbd-pending, 0x16, title="keyboard key pending", fn=AH, eax=0x0100
	STEP kbd-read, 0x16, title="keyboard read key", fn=AH, eax=0x0000, flags=F_IFKEY
	STEP kbd-ext-shift, 0x16, title="extended shift flags", fn=AH, eax=0x1200, need=optional

	# -- system
	GROUP system
	STEP sysconf, 0x15, title="system configuration table", fn=AH, eax=0xC000, flags=F_DUMPESBX, dumplen=16, need=optional
	STEP equipment, 0x11, title="equipment list"
	STEP ist, 0x15, title="Intel SpeedStep (IST) info", fn=AX, eax=0xE980, edx=0x47534943, need=optional

	# -- APM: check, disconnect, connect real mode, version, enable, 32-bit
	GROUP APM
	STEP apm-check, 0x15, title="APM installation check", fn=AX, eax=0x5300, ebx=0, need=optional
	STEP apm-disconnect, 0x15, title="APM disconnect", fn=AX, eax=0x5304, ebx=0, need=optional
	STEP apm-connect-rm, 0x15, title="APM connect real mode", fn=AX, eax=0x5301, ebx=0, need=optional
	STEP apm-version, 0x15, title="APM driver version", fn=AX, eax=0x530E, ebx=0, ecx=0x0102, need=optional
	STEP apm-enable, 0x15, title="APM enable power management", fn=AX, eax=0x5308, ebx=1, ecx=1, need=optional
	STEP apm-disconnect2, 0x15, title="APM disconnect", fn=AX, eax=0x5304, ebx=0, need=optional
	STEP apm-connect-32, 0x15, title="APM connect 32-bit protected mode", fn=AX, eax=0x5303, ebx=0, need=optional
	STEP apm-disconnect3, 0x15, title="APM disconnect", fn=AX, eax=0x5304, ebx=0, need=optional

	# -- disks, once per BIOS hard disk
	GROUP disk
	STEP disk-reset, 0x13, title="disk reset", fn=AH, eax=0x0000, flags=F_DRIVE
	STEP edd-check, 0x13, title="EDD installation check", fn=AH, eax=0x4100, ebx=0x55AA, flags=F_DRIVE, need=optional
	STEP edd-params, 0x13, title="EDD drive parameters", fn=AH, eax=0x4800, flags=F_DRIVE|F_DSSI|F_PRE, buf=buf_main, dumplen=66, pre=0x0042, need=optional
	STEP disk-geometry, 0x13, title="disk geometry (CHS)", fn=AH, eax=0x0800, flags=F_DRIVE
	STEP dasd-type, 0x13, title="DASD type", fn=AX, eax=0x1500, flags=F_DRIVE, need=optional
	STEP read-chs, 0x13, title="read sector by CHS", fn=AX, eax=0x0201, ecx=0x0001, flags=F_DRIVE|F_ESBX, buf=buf_sector, dumplen=512
	STEP read-lba, 0x13, title="read sector by LBA", fn=AH, eax=0x4200, flags=F_DRIVE|F_DSSI, buf=dap, dump=buf_sector, dumplen=512
	STEP fdpt-hd0, title="fixed disk parameter table hd0 (int 41h)", handler=h_fdpt41, post=p_dumpfar
	STEP fdpt-hd1, title="fixed disk parameter table hd1 (int 46h)", handler=h_fdpt46, post=p_dumpfar

	# -- video
	GROUP video
	STEP video-cursor, 0x10, title="cursor position", fn=AH, eax=0x0300, ebx=0
	STEP video-mode, 0x10, title="current video mode", fn=AH, eax=0x0F00
	STEP video-ega, 0x10, title="EGA information", fn=AH+BL, eax=0x1200, ebx=0x10, need=optional
	STEP video-dcc, 0x10, title="display combination code", fn=AX, eax=0x1A00, need=optional
	STEP video-setmode, 0x10, title="set video mode 3", fn=AX, eax=0x0003
	STEP video-font-8x14, 0x10, title="load ROM font 8x14", fn=AX, eax=0x1111, ebx=0
	STEP video-font-8x8, 0x10, title="load ROM font 8x8", fn=AX, eax=0x1112, ebx=0
	STEP video-font-8x16, 0x10, title="load ROM font 8x16", fn=AX, eax=0x1114, ebx=0
	STEP vbe-info, 0x10, title="VESA controller information", fn=AX, eax=0x4F00, flags=F_ESDI|F_PRE, buf=buf_main, dumplen=512, pre=0x32454256, post=p_vbe, need=optional
	STEP vbe-mode-info, 0x10, title="VESA mode information", fn=AX, eax=0x4F01, ecx=0x0101, flags=F_ESDI, buf=buf_main, dumplen=256, need=optional
	STEP vbe-set-mode, 0x10, title="VESA set mode", fn=AX, eax=0x4F02, ebx=0x0003, need=optional
	STEP ddc-caps, 0x10, title="DDC capabilities", fn=AX+BL, eax=0x4F15, ebx=0, need=optional
	STEP edid, 0x10, title="read EDID", fn=AX+BL, eax=0x4F15, ebx=1, ecx=0, edx=0, flags=F_ESDI, buf=buf_main, dumplen=128, need=optional
	STEP video-teletype, 0x10, title="teletype output", fn=AH, eax=0x0E4B, ebx=0x0007

	# -- time, PCI, waiting
	GROUP time
	STEP ticks, 0x1A, title="tick count", fn=AH, eax=0x0000
	STEP rtc-time, 0x1A, title="RTC time", fn=AH, eax=0x0200
	STEP rtc-date, 0x1A, title="RTC date", fn=AH, eax=0x0400
	GROUP PCI
	STEP pci-bios, 0x1A, title="PCI BIOS present", fn=AX, eax=0xB101, need=optional
	STEP pci-find-vga, 0x1A, title="PCI find VGA class", fn=AX, eax=0xB103, ecx=0x030000, need=optional
	GROUP time
	STEP tick-advance, title="timer tick advancing", handler=h_ticks
	STEP wait, 0x15, title="wait 100 ms", fn=AH, eax=0x8600, ecx=0x0001, edx=0x86A0, need=optional
	STEP ticks-after, 0x1A, title="tick count after wait", fn=AH, eax=0x0000

	# -- optional: boot again through the firmware
	GROUP boot
	STEP int19-boot, 0x19, title="bootstrap loader (int 19h)", flags=F_OPTIN

	.subsection 2
	.globl kt_steps_end
kt_steps_end:
	.subsection 0
