# runner.S: the one generic step interpreter.  Each row of the step table
# (steps.S) is a BIOS call described as data; run_steps walks the table,
# honours the configuration (skip, hang, reset, opt-in), repeats per drive or
# per E820 continuation, and frames every call with begin/end lines.
	.code16

run_steps:
	movw $(kt_steps - K0), %si
	movw $0, cur_idx - K0
next_row:
	cmpw $(kt_steps_end - K0), %si
	jb 1f
	ret
1:	movw %si, cur_row - K0
	movb $0, iter_kind - K0
	movw cur_idx - K0, %bx			# skip bitmap
	movw %bx, %cx
	shrw $3, %bx
	andb $7, %cl
	movb cfg_skip - K0(%bx), %al
	shrb %cl, %al
	testb $1, %al
	jz 2f
	SKIP config
	jmp advance
2:	testw $F_OPTIN, R_FLAGS(%si)
	jz 3f
	testl $C_INT19, cfg_flags - K0
	jnz 21f
	SKIP optin
	jmp advance
21:	call print_done				# the test part is over: say so
	pushw %fs				# tell the lab's boot sector it was
	xorw %ax, %ax				# reached through int 19h (BDA 4F0h)
	movw %ax, %fs
	movl $0x3931544B, %fs:0x4F0		# 'KT19'
	popw %fs
	jmp 4f
3:	testw $F_NMIOPT, R_FLAGS(%si)
	jz 31f
	testl $C_NMI, cfg_flags - K0
	jnz 4f
	SKIP optin
	jmp advance
31:	testw $F_IFKEY, R_FLAGS(%si)
	jz 4f
	testw $0x40, last_fl - K0		# ZF set: no key waiting
	jz 4f
	SKIP nokey
	jmp advance
4:	testw $F_DRIVE, R_FLAGS(%si)
	jnz per_drive
	testw $F_E820, R_FLAGS(%si)
	jnz per_e820
	call do_step
	jmp advance

per_drive:					# DL = 80h .. 80h + min(BDA 475h, cfg) - 1
	pushw %es
	xorw %ax, %ax
	movw %ax, %es
	movzbw %es:0x475, %ax
	popw %es
	cmpw cfg_maxdrv - K0, %ax
	jbe 1f
	movw cfg_maxdrv - K0, %ax
1:	testw %ax, %ax
	jnz 2f
	SKIP nodrive
	jmp advance
2:	movb %al, drv_count - K0
	movb $0x80, cur_drive - K0
	movb $1, iter_kind - K0
3:	call do_step
	incb cur_drive - K0
	movb cur_drive - K0, %al
	subb $0x80, %al
	cmpb drv_count - K0, %al
	jb 3b
	jmp advance

per_e820:					# repeat while CF=0 and EBX != 0
	movb $2, iter_kind - K0
	movw $0, cur_iter - K0
	movl $0, e820_next - K0
1:	call do_step
	testw $1, res_fl - K0
	jnz advance
	movl res_ebx - K0, %eax
	testl %eax, %eax
	jz advance
	movl %eax, e820_next - K0
	incw cur_iter - K0
	cmpw $128, cur_iter - K0
	jb 1b

advance:
	movw cur_row - K0, %si
	addw $KT_STEP_SIZE, %si
	incw cur_idx - K0
	jmp next_row

skip_row:					# DI = reason: "KT skip NNN name reason=R"
	call line_begin
	PUTS "skip "
	call put_stepid
	PUTS " reason="
	movw %di, %si
	call puts
	call line_end
	ret

# One call of the current row: begin line, injected hang/reset, the call
# (generic int or built-in routine), end line, dumps, post routine.
do_step:
	call line_begin
	PUTS "begin "
	call put_stepid
	movw cur_row - K0, %si
	PUTS " int="
	movzbl R_INT(%si), %eax
	movw $2, %cx
	call puthex
	PUTS " ax="
	movzwl R_EAX(%si), %eax
	movw $4, %cx
	call puthex
	call put_iter
	call line_end

	movw cur_idx - K0, %ax
	cmpw cfg_hang - K0, %ax
	jne 1f
	cli					# injected hang: spin, interrupts off
0:	jmp 0b
1:	cmpw cfg_reset - K0, %ax
	jne 2f
	lidt zero_idt - K0			# injected reset: triple fault
	int $3

2:	call tsc_mark				# the call's time (tsc.S)
	movw cur_row - K0, %si
	movw R_HANDLER(%si), %ax
	testw %ax, %ax
	jz 3f
	call clear_results
	movw cur_row - K0, %si
	call *R_HANDLER(%si)
	jmp 4f
3:	call generic_int
4:	call tsc_lap
	movw res_fl - K0, %ax
	movw %ax, last_fl - K0
	testw $1, %ax
	jz 5f
	incw err_count - K0

5:	call line_begin
	PUTS "end "
	call put_stepid
	call put_iter
	PUTS " cf="
	movzwl res_fl - K0, %eax
	andw $1, %ax
	movw $1, %cx
	call puthex
	REGFIELDS res_
	FIELDW ds, res_ds-K0
	FIELDW es, res_es-K0
	FIELDW fl, res_fl-K0
	call put_us
	call line_end

	movw cur_row - K0, %si			# dumps
	movw R_DUMPLEN(%si), %cx
	testw %cx, %cx
	jz 7f
	xorw %di, %di
	testw $F_DUMPESBX, R_FLAGS(%si)
	jz 6f
	testw $1, res_fl - K0			# a table at ES:BX, if the call worked
	jnz 7f
	movw res_es - K0, %ax
	movw res_ebx - K0, %bx
	call dump
	jmp 7f
6:	movw R_DUMP(%si), %bx
	testw %bx, %bx
	jnz 61f
	movw R_BUF(%si), %bx
61:	movw %ds, %ax
	call dump
7:	movw cur_row - K0, %si			# post routine
	movw R_POST(%si), %ax
	testw %ax, %ax
	jz 8f
	call *%ax
8:	ret

# Load the row's registers (with per-drive / E820 substitutions and the
# buffer pointer), patch the interrupt number into the int instruction,
# call, and store every register and the flags as the BIOS returned them.
generic_int:
	movw cur_row - K0, %si
	movb R_INT(%si), %al
	movb %al, int_imm - K0
	movl R_EAX(%si), %eax
	movl %eax, in_eax - K0
	movl R_EBX(%si), %eax
	movl %eax, in_ebx - K0
	movl R_ECX(%si), %eax
	movl %eax, in_ecx - K0
	movl R_EDX(%si), %eax
	movl %eax, in_edx - K0
	movl $0, in_esi - K0
	movl $0, in_edi - K0
	cmpb $1, iter_kind - K0
	jne 1f
	movb cur_drive - K0, %al
	movb %al, in_edx - K0
1:	cmpb $2, iter_kind - K0
	jne 2f
	movl e820_next - K0, %eax
	movl %eax, in_ebx - K0
2:	movw R_DUMP(%si), %di			# zero the area we will dump
	testw %di, %di
	jnz 21f
	movw R_BUF(%si), %di
21:	movw R_DUMPLEN(%si), %cx
	testw %di, %di
	jz 22f
	testw $F_DUMPESBX, R_FLAGS(%si)
	jnz 22f
	xorb %al, %al
	rep stosb
22:	movzwl R_BUF(%si), %eax
	testw %ax, %ax
	jz 5f
	testw $F_PRE, R_FLAGS(%si)
	jz 3f
	movl R_PRE(%si), %edx
	movw %ax, %di
	movl %edx, (%di)
3:	testw $F_ESDI, R_FLAGS(%si)
	jz 31f
	movl %eax, in_edi - K0
31:	testw $F_ESBX, R_FLAGS(%si)
	jz 32f
	movl %eax, in_ebx - K0
32:	testw $F_DSSI, R_FLAGS(%si)
	jz 5f
	movl %eax, in_esi - K0
5:	movw %sp, saved_sp - K0
	movl in_eax - K0, %eax
	movl in_ebx - K0, %ebx
	movl in_ecx - K0, %ecx
	movl in_edx - K0, %edx
	movl in_edi - K0, %edi
	movl in_esi - K0, %esi
	jmp int_insn				# flush the prefetched old immediate
int_insn:
	.byte 0xCD				# int imm8, patched above
int_imm:
	.byte 0x00
	pushfw
	movl %eax, %cs:res_eax - K0
	movl %ebx, %cs:res_ebx - K0
	movl %ecx, %cs:res_ecx - K0
	movl %edx, %cs:res_edx - K0
	movl %esi, %cs:res_esi - K0
	movl %edi, %cs:res_edi - K0
	movw %ds, %cs:res_ds - K0
	movw %es, %cs:res_es - K0
	popw %cs:res_fl - K0
	movw %cs, %ax
	movw %ax, %ds
	movw %ax, %es
	cld
	ret

clear_results:
	pushw %di
	pushw %cx
	pushw %ax
	movw $(res_eax - K0), %di
	movw $(res_end - res_eax), %cx
	xorb %al, %al
	rep stosb
	movw %ds, res_ds - K0
	movw %es, res_es - K0
	popw %ax
	popw %cx
	popw %di
	ret

put_stepid:					# "NNN name"
	pushw %si
	pushw %ax
	movw cur_idx - K0, %ax
	call putdec3
	movb $' ', %al
	call putc
	movw cur_row - K0, %si
	movw R_NAME(%si), %si
	call puts
	popw %ax
	popw %si
	ret

put_iter:					# " dl=80" or " i=NNN"
	pushal
	cmpb $1, iter_kind - K0
	jne 1f
	PUTS " dl="
	movzbl cur_drive - K0, %eax
	movw $2, %cx
	call puthex
	jmp 2f
1:	cmpb $2, iter_kind - K0
	jne 2f
	PUTS " i="
	movw cur_iter - K0, %ax
	call putdec3
2:	popal
	ret

print_done:					# "KT done steps=NNN errors=NNN [next=int19]"
	cmpb $0, done_printed - K0
	jne 2f
	movb $1, done_printed - K0
	call line_begin
	PUTS "done steps="
	movw $(kt_steps_end - kt_steps), %ax
	xorw %dx, %dx
	movw $KT_STEP_SIZE, %cx
	divw %cx
	call putdec3
	PUTS " errors="
	movw err_count - K0, %ax
	call putdec3
	testl $C_INT19, cfg_flags - K0
	jz 1f
	PUTS " next=int19"
1:	call line_end
2:	ret
