# io.S: the UART, the line checksum and the number printers, once for the
# 32-bit prologue (banner only) and once for real mode (everything else).
# Every line: "KT " ... " ~CCCC" CR LF, CCCC = Fletcher-16 mod 256 of the
# bytes before " ~" (docs/trace-format.md).  The UART wait is bounded, so a
# missing UART (wrong base address) never hangs the payload.

# ------------------------------------------------------------------ 32-bit
	.code32
uart_init32:
	testl $C_KEEPUART, cfg_flags
	jnz 9f
	movw cfg_uart, %dx
	addw $3, %dx
	movb $0x80, %al				# LCR: DLAB on
	outb %al, %dx
	movw cfg_uart, %dx
	movw cfg_div, %ax
	outb %al, %dx				# divisor latch low
	incw %dx
	movb %ah, %al
	outb %al, %dx				# divisor latch high
	addw $2, %dx
	movb $0x03, %al				# LCR: 8N1, DLAB off
	outb %al, %dx
	subw $2, %dx
	xorb %al, %al				# IER: no interrupts, we poll
	outb %al, %dx
	incw %dx
	movb $0xC7, %al				# FCR: FIFO on, cleared
	outb %al, %dx
	addw $2, %dx
	movb $0x03, %al				# MCR: DTR, RTS
	outb %al, %dx
9:	ret

# AL = character.  Keeps all registers.
putc32:
	pushl %eax
	pushl %ecx
	pushl %edx
	cmpb $0, ck_on
	je 1f
	addb %al, ck_s1
	movb ck_s1, %ah
	addb %ah, ck_s2
1:	movb %al, %ah
	movw cfg_uart, %dx
	addw $5, %dx
	movl $0x40000, %ecx
2:	inb %dx, %al
	testb $0x20, %al			# LSR: transmit holding register empty
	jnz 3f
	loop 2b
3:	movw cfg_uart, %dx
	movb %ah, %al
	outb %al, %dx
	testl $C_E9, cfg_flags
	jz 4f
	outb %al, $0xE9
4:	testl $C_VGA, cfg_flags
	jz 5f
	movzwl vga_pos, %edx
	cmpb $13, %al
	je 6f
	cmpb $10, %al
	je 7f
	movb %al, 0xB8000(,%edx,2)
	movb $0x07, 0xB8001(,%edx,2)
	incl %edx
	jmp 8f
6:	movl %edx, %eax				# CR: column 0
	movl $80, %ecx
	pushl %edx
	xorl %edx, %edx
	divl %ecx
	popl %eax
	subl %edx, %eax
	movl %eax, %edx
	jmp 8f
7:	addl $80, %edx				# LF: next row
8:	cmpl $2000, %edx
	jb 9f
	xorl %edx, %edx				# wrap to the top
9:	movw %dx, vga_pos
5:	popl %edx
	popl %ecx
	popl %eax
	ret

puts32:						# ESI = string
	pushl %eax
	pushl %esi
1:	lodsb
	testb %al, %al
	jz 2f
	call putc32
	jmp 1b
2:	popl %esi
	popl %eax
	ret

hex32:						# EAX value, ECX digits
	pushal
	movl %ecx, %ebx
	movl $8, %ecx
	subl %ebx, %ecx
	shll $2, %ecx
	shll %cl, %eax
	movl %eax, %edx
	movl %ebx, %ecx
1:	roll $4, %edx
	movb %dl, %al
	andb $0x0F, %al
	addb $'0', %al
	cmpb $'9', %al
	jbe 2f
	addb $7, %al
2:	call putc32
	loop 1b
	popal
	ret

dec3_32:					# EAX value 0..999
	pushal
	xorl %edx, %edx
	movl $100, %ecx
	divl %ecx
	addb $'0', %al
	call putc32
	movl %edx, %eax
	movb $10, %cl
	divb %cl
	movb %ah, %ch
	addb $'0', %al
	call putc32
	movb %ch, %al
	addb $'0', %al
	call putc32
	popal
	ret

line_begin32:
	movb $0, ck_s1
	movb $0, ck_s2
	movb $1, ck_on
	PUTS32 "KT "
	ret

line_end32:
	movb $0, ck_on
	PUTS32 " ~"
	movb ck_s2, %ah
	movb ck_s1, %al
	movzwl %ax, %eax
	movl $4, %ecx
	call hex32
	PUTS32 "\r\n"
	ret

# The first line: who we are (version, GNU build-id of the ELF), how we
# were entered, where we print.  From protected mode, so a failure of the
# real-mode descent still leaves a banner on the wire.
banner32:
	call line_begin32
	PUTS32 "banner version="
	movl $kt_version, %esi
	call puts32
	PUTS32 " build="
	movl $kt_build_note_end, %eax
	subl $kt_build_note, %eax
	cmpl $16, %eax
	jb 3f
	movl $kt_build_note, %esi
	movl (%esi), %eax			# namesz, padded to 4
	addl $3, %eax
	andl $~3, %eax
	movl 4(%esi), %ecx			# descsz
	leal 12(%esi,%eax), %esi
	jecxz 3f
1:	lodsb
	pushl %ecx
	movl $2, %ecx
	call hex32
	popl %ecx
	loop 1b
	jmp 4f
3:	PUTS32 "none"
4:	PUTS32 " entry="
	movzbl entry_mode, %eax
	movl $2, %ecx
	call hex_as_dec32
	call banner_via32
	PUTS32 " uart="
	movzwl cfg_uart, %eax
	movl $4, %ecx
	call hex32
	PUTS32 " div="
	movzwl cfg_div, %eax
	movl $4, %ecx
	call hex32
	PUTS32 " steps="
	movl $(kt_steps_end - kt_steps), %eax
	xorl %edx, %edx
	movl $KT_STEP_SIZE, %ecx
	divl %ecx
	call dec3_32
	call line_end32
	ret

hex_as_dec32:					# 32 or 64, two decimal digits
	pushal
	movb $10, %cl
	divb %cl
	addb $'0', %al
	call putc32
	movb %ah, %al
	addb $'0', %al
	call putc32
	popal
	ret

# ---------------------------------------------------------------- 16-bit
	.code16
putc:						# AL = character; keeps registers
	pushw %ax
	pushw %cx
	pushw %dx
	cmpb $0, ck_on - K0
	je 1f
	addb %al, ck_s1 - K0
	movb ck_s1 - K0, %ah
	addb %ah, ck_s2 - K0
1:	movb %al, %ah
	movw cfg_uart - K0, %dx
	addw $5, %dx
	movw $0xFFFF, %cx
2:	inb %dx, %al
	testb $0x20, %al
	jnz 3f
	loop 2b
3:	movw cfg_uart - K0, %dx
	movb %ah, %al
	outb %al, %dx
	testl $C_E9, cfg_flags - K0
	jz 4f
	outb %al, $0xE9
4:	testl $C_VGA, cfg_flags - K0
	jz 5f
	call vga_putc
5:	popw %dx
	popw %cx
	popw %ax
	ret

vga_putc:					# AL = character
	pushw %es
	pushw %bx
	pushw %dx
	pushw %ax
	movw $0xB800, %bx
	movw %bx, %es
	movw vga_pos - K0, %bx
	cmpb $13, %al
	je 1f
	cmpb $10, %al
	je 2f
	shlw $1, %bx
	movb %al, %es:(%bx)
	movb $0x07, %es:1(%bx)
	shrw $1, %bx
	incw %bx
	jmp 3f
1:	movw %bx, %ax				# CR: column 0
	xorw %dx, %dx
	movw $80, %bx
	divw %bx
	mulw %bx
	movw %ax, %bx
	jmp 3f
2:	addw $80, %bx				# LF
3:	cmpw $2000, %bx
	jb 4f
	xorw %bx, %bx
4:	movw %bx, vga_pos - K0
	popw %ax
	popw %dx
	popw %bx
	popw %es
	ret

puts:						# DS:SI = string; keeps registers
	pushw %ax
	pushw %si
1:	lodsb
	testb %al, %al
	jz 2f
	call putc
	jmp 1b
2:	popw %si
	popw %ax
	ret

puthex:						# EAX value, CX digits (1..8)
	pushal
	movw %cx, %bx
	movw $8, %cx
	subw %bx, %cx
	shlw $2, %cx
	shll %cl, %eax
	movl %eax, %edx
	movw %bx, %cx
1:	roll $4, %edx
	movb %dl, %al
	andb $0x0F, %al
	addb $'0', %al
	cmpb $'9', %al
	jbe 2f
	addb $7, %al
2:	call putc
	loop 1b
	popal
	ret

putdec3:					# AX value 0..999, three digits
	pushal
	xorw %dx, %dx
	movw $100, %bx
	divw %bx
	addb $'0', %al
	call putc
	movw %dx, %ax
	movb $10, %bl
	divb %bl
	movb %ah, %bh
	addb $'0', %al
	call putc
	movb %bh, %al
	addb $'0', %al
	call putc
	popal
	ret

putfield:					# SI = " key=", EAX value, CX digits
	call puts
	call puthex
	ret

putfar:						# SI = " key=", EAX = seg << 16 | off
	pushl %eax
	call puts
	rorl $16, %eax
	movw $4, %cx
	call puthex
	movb $':', %al
	call putc
	popl %eax
	movw $4, %cx
	call puthex
	ret

line_begin:
	movb $0, ck_s1 - K0
	movb $0, ck_s2 - K0
	movb $1, ck_on - K0
	PUTS "KT "
	ret

line_end:
	pushal
	movb $0, ck_on - K0
	PUTS " ~"
	movb ck_s2 - K0, %ah
	movb ck_s1 - K0, %al
	movzwl %ax, %eax
	movw $4, %cx
	call puthex
	PUTS "\r\n"
	popal
	ret

# Dump CX bytes at AX:BX as "KT data NNN name [iter] [tag=T] off=XXXX HEX"
# lines of at most 32 bytes.  DI = tag string or 0.
dump:
	pushal
	pushw %fs
	movw %ax, %fs
	movw %bx, d_off - K0
	movw %cx, d_len - K0
	movw %di, d_tag - K0
	movw $0, d_pos - K0
1:	movw d_len - K0, %cx
	subw d_pos - K0, %cx
	jbe 9f
	cmpw $32, %cx
	jbe 2f
	movw $32, %cx
2:	movw %cx, d_chunk - K0
	call line_begin
	PUTS "data "
	call put_stepid
	call put_iter
	movw d_tag - K0, %si
	testw %si, %si
	jz 3f
	PUTS " tag="
	call puts
3:	PUTS " off="
	movzwl d_pos - K0, %eax
	movw $4, %cx
	call puthex
	movb $' ', %al
	call putc
	movw d_off - K0, %bx
	addw d_pos - K0, %bx
	movw d_chunk - K0, %dx
4:	movzbl %fs:(%bx), %eax
	movw $2, %cx
	call puthex
	incw %bx
	decw %dx
	jnz 4b
	call line_end
	movw d_chunk - K0, %cx
	addw %cx, d_pos - K0
	jmp 1b
9:	popw %fs
	popal
	ret
