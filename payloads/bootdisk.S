/*
 * bootdisk.S: the boot sector of `kexectest build --image disk` (the payload
 * booted straight from the firmware: the POST baseline).  Not part of the
 * payload; docs/payload.md describes the image.
 *
 * The firmware loads this sector to 0000:7C00 and jumps to it with DL = the
 * drive.  It reads the payload's load segment from the sectors after it to
 * KT_BASE, by LBA (int 13h AH=42h) where the BIOS has the extensions for the
 * drive, else by CHS (AH=02h, geometry from AH=08h) -- one sector a call, the
 * one form every BIOS takes -- and enters the payload in real mode at
 * kt_entry16 (bootload.S).  It prints nothing unless a read fails.
 *
 * The host fills the parameter block (bootload.S), the MBR disk signature at
 * 0x1B8 and the partition table (one active partition over the payload: some
 * BIOSes boot a USB stick as a hard disk only with one).
 *
 * Build: as --32 -o d.o bootdisk.S; ld -m elf_i386 -Ttext 0x7c00 --oformat binary -o d.bin d.o
 */

	.set	SECTOR_PARAS, 512 / 16
	.set	MEDIUM, 0
	.set	LOADER_END, 0x7c00 + 512

	.code16
	.text
	.globl	_start
_start:						/* CS:IP 0000:7C00 or 07C0:0000: the */
	cli					/* code is position-independent, data */
	xorw	%ax, %ax			/* through DS = 0 */
	movw	%ax, %ds
	movw	%ax, %es
	movw	%ax, %ss
	movw	$0x7c00, %sp
	sti
	cld
	movb	%al, use_lba
	movb	%dl, drive
	movb	$0x41, %ah			/* extensions for this drive? */
	movw	$0x55AA, %bx
	int	$0x13
	jc	chs
	cmpw	$0xAA55, %bx
	jne	chs
	testb	$1, %cl				/* the packet interface (42h) */
	jz	chs
	incb	use_lba
	jmp	go
chs:	movb	$0x08, %ah			/* CHS geometry */
	movb	drive, %dl
	xorw	%di, %di
	int	$0x13
	movb	%ah, err
	jc	fail
	andb	$0x3F, %cl
	movb	%cl, spt
	movzbw	%dh, %ax
	incw	%ax
	movw	%ax, heads
go:	movl	p_first, %eax
	jmp	load_payload

/* read_sector: sector EAX (an LBA) to ES:0000.  By CHS the cylinder is not
 * checked against 1023: the payload lies in the image's first cylinders. */
read_sector:
	cmpb	$0, use_lba
	je	1f
	movl	%eax, dap_lba
	movw	%es, dap_seg
	movw	$dap, %si
	movb	$0x42, %ah
	movb	drive, %dl
	int	$0x13
	jmp	3f
1:	xorl	%edx, %edx
	movzbl	spt, %ebx
	divl	%ebx				/* EAX = LBA / spt, EDX = sector - 1 */
	incw	%dx
	movw	%dx, %cx
	xorl	%edx, %edx
	movzwl	heads, %ebx
	divl	%ebx				/* EAX = cylinder, EDX = head */
	movb	%dl, %dh
	movb	%al, %ch
	shlb	$6, %ah				/* cylinder bits 8-9 -> CL bits 6-7 */
	orb	%ah, %cl
	xorw	%bx, %bx
	movw	$0x0201, %ax
	movb	drive, %dl
	int	$0x13
3:	jnc	5f
	movb	%ah, err
5:	ret

	.include "bootload.S"

dap:	.byte	0x10, 0
	.word	1, 0				/* one sector, to offset 0 of */
dap_seg:	.word	0			/* ... this segment */
dap_lba:	.long	0, 0
	.set	use_lba, LOADER_END + 3
	.set	spt, LOADER_END + 4
	.set	heads, LOADER_END + 5		/* a word */

	.org	0x1b8
disk_signature:
	.long	0				/* filled by the host */
	.word	0
partitions:					/* 0x1BE: filled by the host */
	.org	510
	.word	0xaa55
