/*
 * bootload.S: what the payload's two boot loaders share (included by
 * bootdisk.S and bootcd.S, never part of the payload): the parameter block
 * the host fills, the loop that reads the payload's load segment to KT_BASE
 * with int 13h, the jump into kt_entry16 (entry16.S), and one plain text
 * line on the UART and the screen when a read fails.
 *
 * The including file defines SECTOR_PARAS (16-byte paragraphs per sector of
 * its medium), MEDIUM (the BL value kt_entry16 reads: 0 disk, 1 CD) and
 * read_sector (EAX = sector number, ES = segment to read to; returns CF=1 and
 * the int 13h status in `err` on failure), stores the BIOS drive in `drive`
 * and the first sector to read in EAX, then jumps to load_payload.
 */

load_payload:
	movw	p_entry + 2, %bx		/* the load segment: KT_BASE >> 4 */
	movw	p_count, %cx
	movb	$0xFF, err			/* an empty block: nothing to read */
	jcxz	fail
1:	pushw	%cx
	pushw	%bx
	movw	%bx, %es
	movb	$3, tries			/* three tries, a reset between */
2:	pushl	%eax
	call	read_sector
	popl	%eax
	jnc	3f
	pushl	%eax
	xorb	%ah, %ah
	movb	drive, %dl
	int	$0x13
	popl	%eax
	decb	tries
	jnz	2b
	stc
3:	popw	%bx
	popw	%cx
	jc	fail
	incl	%eax
	addw	$SECTOR_PARAS, %bx
	loop	1b
	movb	drive, %dl
	movb	$MEDIUM, %bl
	ljmp	*p_entry			/* 2000:(kt_entry16 - KT_BASE) */

/* The read failed: say so in one line, then wait (Ctrl-Alt-Del reboots).
 * The UART is programmed from the table the host filled (register offset,
 * value: DLAB, divisor low and high, 8N1, FIFO, DTR+RTS; none to keep it). */
fail:
	movw	$uart_init, %si
	movzbw	p_uart_n, %cx
	jcxz	4f
8:	lodsw					/* AL = register, AH = value */
	movb	%ah, %bl
	cbtw
	addw	p_uart, %ax
	xchgw	%ax, %dx
	movb	%bl, %al
	outb	%al, %dx
	loop	8b
4:	movw	$msg_fail, %si
	call	puts
	movb	err, %al
	call	puthex
	movw	$msg_drive, %si
	call	puts
	movb	drive, %al
	call	puthex
	movw	$msg_end, %si
	call	puts
5:	sti
	hlt
	jmp	5b

puts:						/* DS:SI = NUL-terminated string */
	lodsb
	testb	%al, %al
	jz	6f
	call	putc
	jmp	puts
6:	ret

puthex:						/* AL as two hex digits */
	pushw	%ax
	shrb	$4, %al
	call	putnib
	popw	%ax
	andb	$0x0F, %al
putnib:
	addb	$'0', %al
	cmpb	$'9', %al
	jbe	putc
	addb	$('A' - '0' - 10), %al
putc:						/* AL to the UART (bounded wait) and the screen */
	pushw	%ax
	pushw	%cx
	movb	%al, %ah
	movw	p_uart, %dx
	addw	$5, %dx
	movw	$0xFFFF, %cx
7:	inb	%dx, %al
	testb	$0x20, %al			/* THR empty */
	loopz	7b
	movb	%ah, %al
	movw	p_uart, %dx
	outb	%al, %dx
	movb	$0x0E, %ah			/* int 10h teletype */
	movw	$0x0007, %bx
	int	$0x10
	popw	%cx
	popw	%ax
	ret

msg_fail:	.asciz	"kexectest: int13 AH="
msg_drive:	.asciz	" DL="
msg_end:	.asciz	"\r\n"

/* The parameter block: found by its magic and filled by the host
 * (kexectest/payload/bootimage.py) from the payload ELF it carries. */
params:
	.ascii	"KTL1"				/* magic and layout version */
p_entry:	.word	0, 0			/* kt_entry16: offset, segment */
p_count:	.word	0			/* sectors of the medium to read */
p_first:	.long	0			/* first sector (bootcd.S: within its file) */
p_uart:	.word	0x3F8				/* the payload's UART base */
p_uart_n:	.byte	0			/* entries of uart_init used */
uart_init:	.fill	12, 1, 0		/* (offset, value) x 6 */

/* variables: just past the loader's sector, in free conventional memory */
	.set	drive, LOADER_END
	.set	err, LOADER_END + 1
	.set	tries, LOADER_END + 2
