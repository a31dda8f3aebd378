# macros.S: string, field and step-table macros shared by the payload files.

# PUTS "text": print a constant string (16-bit code; keeps registers).
.macro PUTS str
	.subsection 1
.Lputs\@:	.asciz "\str"
	.subsection 0
	pushw %si
	movw $(.Lputs\@ - K0), %si
	call puts
	popw %si
.endm

# PUTS32 "text": the same for the 32-bit protected-mode prologue.
.macro PUTS32 str
	.subsection 1
.Lputs32_\@:	.asciz "\str"
	.subsection 0
	pushl %esi
	movl $.Lputs32_\@, %esi
	call puts32
	popl %esi
.endm

# KEY key: SI -> the constant string " key=" (the start of every printed field).
.macro KEY key
	.subsection 1
.Lkey\@:	.asciz " \key="
	.subsection 0
	movw $(.Lkey\@ - K0), %si
.endm

# FIELD key, src, digits[, load]: print " key=HEX" with the value from src
# (a memory operand or register; `load` movzwl for a 16-bit word).
.macro FIELD key, src, digits, load=movl
	\load \src, %eax
	KEY \key
	movw $\digits, %cx
	call putfield
.endm

# REGFIELDS prefix: " eax=... ebx=... ecx=... edx=... esi=... edi=..." from the six
# dwords named prefix+register (s_ for the entry state, res_ for a step's results).
.macro REGFIELDS p
	FIELD eax, \p\()eax-K0, 8
	FIELD ebx, \p\()ebx-K0, 8
	FIELD ecx, \p\()ecx-K0, 8
	FIELD edx, \p\()edx-K0, 8
	FIELD esi, \p\()esi-K0, 8
	FIELD edi, \p\()edi-K0, 8
.endm

# FIELDW key, src: a 16-bit memory word as 4 hex digits.
.macro FIELDW key, src
	FIELD \key, \src, 4, movzwl
.endm

# FARPTR key, src: a far pointer dword in memory printed as SSSS:OOOO.
.macro FARPTR key, src
	movl \src, %eax
	KEY \key
	call putfar
.endm

# SKIP reason: print "KT skip NNN name reason=<reason>" for the current row.
.macro SKIP reason
	.subsection 1
.Lskip\@:	.asciz "\reason"
	.subsection 0
	movw $(.Lskip\@ - K0), %di
	call skip_row
.endm

# Row flags (docs/payload.md).
	.set F_ESDI, 0x0001		# buffer in ES:DI
	.set F_ESBX, 0x0002		# buffer in ES:BX
	.set F_DSSI, 0x0004		# buffer in DS:SI
	.set F_DRIVE, 0x0008		# once per BIOS hard disk, DL = 80h..
	.set F_E820, 0x0010		# repeat while CF=0 and EBX != 0
	.set F_PRE, 0x0020		# store the prefill dword at the buffer
	.set F_DUMPESBX, 0x0040		# dump the table returned at ES:BX
	.set F_IFKEY, 0x0080		# only if the previous step left ZF=0
	.set F_OPTIN, 0x0100		# only with configuration flag C_INT19
	.set F_NMIOPT, 0x0200		# only with configuration flag C_NMI

# STEP id, int, eax, ..., title="...", fn=AX|AH|AH+BL|..., need=required|optional
# One step: a 36-byte row of the step table (subsection 2, run by runner.S)
# and, in the section .kt_step_meta that is never loaded, the record the host
# reads about it (docs/payload.md, "Step table"): the title reports show, the
# registers whose input values name the BIOS function ("AX" for AX=E820h,
# "AH" for AH=88h, none for built-ins and int 11h/12h/19h), and whether a
# healthy BIOS may lack the service (need=optional: its "not supported" answer
# describes the firmware, it is not a failure).  How to add a step: docs/payload.md.
.macro STEP name, int=0, eax=0, ebx=0, ecx=0, edx=0, flags=0, handler=0, buf=0, dumplen=0, pre=0, post=0, dump=0, title=, fn=, need=required
	.ifb \title
	.error "STEP \name: no title= (reports name the step by it)"
	.endif
	.ifnc \need,required
	.ifnc \need,optional
	.error "STEP \name: need=\need, expected required or optional"
	.endif
	.endif
	.pushsection .kt_step_meta, "", @progbits
	.asciz "\name", "\title", "\fn", "\need"
	kt_group_name \name
	.popsection
	.subsection 1
.Lname\@:	.asciz "\name"
	.subsection 2
	.word .Lname\@ - K0
	.byte \int, 0
	.word \flags
	.ifc \handler,0
	.word 0
	.else
	.word \handler - K0
	.endif
	.long \eax, \ebx, \ecx, \edx
	.ifc \buf,0
	.word 0
	.else
	.word \buf - K0
	.endif
	.word \dumplen
	.long \pre
	.ifc \post,0
	.word 0
	.else
	.word \post - K0
	.endif
	.ifc \dump,0
	.word 0
	.else
	.word \dump - K0
	.endif
	.subsection 0
.endm

# GROUP name: the BIOS concern of the STEP lines that follow it (memory, A20, disk, ...; a
# word), the fifth string of their metadata records: reports group the steps by it (the sweep
# matrix's columns).  It redefines kt_group_name, which each STEP expands; a STEP before any
# GROUP line does not assemble.
.macro kt_group_name step
	.error "STEP \step: no GROUP line before it (docs/payload.md)"
.endm
.macro GROUP name
	.purgem kt_group_name
	.macro kt_group_name step
	.asciz "\name"
	.endm
.endm

# The step metadata's first string names its format; STEP appends one record
# (id, title, fn, need, group: five NUL-terminated strings) per row, in row order.
	.pushsection .kt_step_meta, "", @progbits
	.asciz "kt-step-meta 2"
	.popsection

# Row field offsets.
	.set R_NAME, 0
	.set R_INT, 2
	.set R_FLAGS, 4
	.set R_HANDLER, 6
	.set R_EAX, 8
	.set R_EBX, 12
	.set R_ECX, 16
	.set R_EDX, 20
	.set R_BUF, 24
	.set R_DUMPLEN, 26
	.set R_PRE, 28
	.set R_POST, 32
	.set R_DUMP, 34
