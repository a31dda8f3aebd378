/*
 * The lab disks' boot sector: proof that the BIOS could boot again.
 *
 * When the payload ends by chaining to int 19h, SeaBIOS loads this sector
 * from the first disk to 0000:7C00 and jumps to it.  It prints one trace line
 * on COM1, computing the line's checksum (docs/trace-format.md) as it goes:
 *
 *     KT boot via=int19 from=disk ~CCCC
 *
 * then writes 0x31 to QEMU's isa-debug-exit port 0xF4 (QEMU exit status 99)
 * and halts.  The MBR disk signature at 0x1B8 is left zero here and filled in
 * per disk by kexectest/lab/image.py; 55AAh ends the sector.
 *
 * Build: as --32 -o bs.o bootsector.S
 *        ld -m elf_i386 -Ttext 0x7c00 --oformat binary -o bs.bin bs.o
 */

	.code16
	.text
	.globl	_start
_start:
	cli
	xorw	%ax, %ax
	movw	%ax, %ds
	movw	%ax, %es
	movw	%ax, %ss
	movw	$0x7c00, %sp
	ljmp	$0, $start2		/* some BIOSes enter at 07C0:0000 */
start2:
	cld


	/* COM1: 115200 baud (divisor 1), 8N1, FIFO on, DTR+RTS */
	movw	$0x3fb, %dx
	movb	$0x80, %al		/* DLAB */
	outb	%al, %dx
	movw	$0x3f8, %dx
	movb	$0x01, %al
	outb	%al, %dx
	incw	%dx
	xorb	%al, %al
	outb	%al, %dx
	movw	$0x3fb, %dx
	movb	$0x03, %al
	outb	%al, %dx
	movw	$0x3fa, %dx
	movb	$0x07, %al
	outb	%al, %dx
	movw	$0x3fc, %dx
	movb	$0x03, %al
	outb	%al, %dx

	/* the line body, summing as we go: BL = s1, BH = s2 */
	movw	$message, %si
	xorw	%bx, %bx
1:	lodsb
	testb	%al, %al
	jz	2f
	call	putc
	addb	%al, %bl
	addb	%bl, %bh
	jmp	1b

2:	movb	$' ', %al
	call	putc
	movb	$'~', %al
	call	putc
	movb	%bh, %al
	call	puthex
	movb	%bl, %al
	call	puthex
	movb	$'\r', %al
	call	putc
	movb	$'\n', %al
	call	putc

	/* wait until the UART has sent everything, then leave QEMU */
	movw	$0x3fd, %dx
3:	inb	%dx, %al
	testb	$0x40, %al		/* transmitter empty */
	jz	3b
	movb	$0x31, %al
	outb	%al, $0xf4
4:	hlt
	jmp	4b

/* puthex: AL as two upper-case hex digits */
puthex:
	pushw	%ax
	shrb	$4, %al
	call	putnib
	popw	%ax
	pushw	%ax
	andb	$0x0f, %al
	call	putnib
	popw	%ax
	ret

putnib:
	addb	$'0', %al
	cmpb	$'9', %al
	jbe	putc
	addb	$('A' - '0' - 10), %al
	/* fall through */

/* putc: AL to COM1, polling THRE; keeps every register */
putc:
	pushw	%dx
	pushw	%ax
	movw	$0x3fd, %dx
5:	inb	%dx, %al
	testb	$0x20, %al
	jz	5b
	popw	%ax
	movw	$0x3f8, %dx
	outb	%al, %dx
	popw	%dx
	ret

message:
	.asciz	"KT boot via=int19 from=disk"

	.org	0x1b8
disk_signature:
	.long	0			/* patched per disk by the image builder */
	.word	0
	.org	510
	.word	0xaa55
