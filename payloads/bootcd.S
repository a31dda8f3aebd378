/*
 * bootcd.S: the El Torito boot image of `kexectest build --image iso` (no
 * emulation), for a BMC's virtual media or a CD.  Not part of the payload;
 * docs/payload.md describes the image.
 *
 * The ISO's boot file is this loader (2048 bytes: one CD sector) followed by
 * the payload's load segment.  The firmware loads the first 2048 bytes to
 * 0000:7C00 and jumps to it with DL = the CD's BIOS drive; the ISO tool
 * writes the boot information table at offset 8 (xorriso -boot-info-table),
 * which tells where the boot file lies.  The loader reads the payload by LBA
 * (int 13h AH=42h, the only form El Torito defines for a no-emulation CD),
 * one 2048-byte sector a call, to KT_BASE and enters it at kt_entry16
 * (bootload.S).  It prints nothing unless a read fails.
 *
 * Build: as --32 -o c.o bootcd.S; ld -m elf_i386 -Ttext 0x7c00 --oformat binary -o c.bin c.o
 */

	.set	SECTOR_PARAS, 2048 / 16
	.set	MEDIUM, 1
	.set	LOADER_END, 0x7c00 + 2048

	.code16
	.text
	.globl	_start
_start:
	jmp	start2
	.org	8
bi_pvd:	.long	0				/* the boot information table */
bi_file:	.long	0			/* LBA of this boot file */
bi_length:	.long	0
bi_csum:	.long	0
	.fill	40, 1, 0
start2:						/* position-independent, data through DS = 0 */
	cli
	xorw	%ax, %ax
	movw	%ax, %ds
	movw	%ax, %es
	movw	%ax, %ss
	movw	$0x7c00, %sp
	sti
	cld
	movb	%dl, drive
	movl	bi_file, %eax
	addl	p_first, %eax			/* the payload: the file's next sector */
	jmp	load_payload

/* read_sector: CD sector EAX to ES:0000 */
read_sector:
	movl	%eax, dap_lba
	movw	%es, dap_seg
	movw	$dap, %si
	movb	$0x42, %ah
	movb	drive, %dl
	int	$0x13
	jnc	1f
	movb	%ah, err
1:	ret

	.include "bootload.S"

dap:	.byte	0x10, 0
	.word	1, 0				/* one sector, to offset 0 of */
dap_seg:	.word	0			/* ... this segment */
dap_lba:	.long	0, 0

	.org	2048
