# bootparams.S: the boot_params page a loader handed over, dumped before
# anything else (docs/trace-format.md, "The hand-off page").
#
# Only the bzImage's doors (bzimage.S) receive one: ESI (RSI) points at it at
# the 32- and 64-bit entries; at the real-mode entry it is the setup part itself
# (the loader fills the page in place).  From flat protected mode, paging off, right after the banner:
# the page, and what it points to, as the kernel or kexec-tools left them.
# Counts are clamped to the tables' sizes (the page's own count is printed
# as it was), the setup_data chain is followed at most BP_SETUP_MAX links and
# only below 4 GiB, so a bad page is reported, never followed off a cliff.

	.set BP_E820_MAX, 128		# e820_table entries in the page
	.set BP_EDD_MAX, 6		# eddbuf entries
	.set BP_MBR_MAX, 16		# edd_mbr_sig_buffer entries
	.set BP_SETUP_MAX, 16		# setup_data links followed
	.set BP_E820EXT_MAX, 1024	# SETUP_E820_EXT entries printed (a link)
	.set BP_CMDLINE_MAX, 2048	# bytes counted of the command line
	.set BP_CMDLINE_DUMP, 256	# bytes printed of it

# BPF name, offset, digits: " name=" and the page's field at EBX+offset.
.macro BPF name, off, digits
	PUTS32 " \name="
	movl \off(%ebx), %eax
	movl $\digits, %ecx
	call hex32
.endm

# " name=" and EAX as `digits` hex digits (keeps registers).
.macro HEXF name, digits
	PUTS32 " \name="
	pushl %ecx
	movl $\digits, %ecx
	call hex32
	popl %ecx
.endm

bootparams32:
	cmpb $0, bz_door
	je 9f
	pushal
	movl bz_page, %ebx
	call line_begin32
	PUTS32 "state bootparams"
	movzbl bz_door, %eax
	HEXF door, 2
	movl %ebx, %eax
	HEXF addr, 8
	movl bz_rsi_hi, %eax
	HEXF hi, 8
	testl %eax, %eax
	jnz 8f					# above 4 GiB: not reachable here
	cmpl $(KT_BASE - 0x1000), %ebx		# overlaps where the payload runs
	jbe 1f
	cmpl $(KT_BASE + 0x10000), %ebx
	jae 1f
	PUTS32 " overwritten=1"
	jmp 8f
1:	BPF loader, 0x210, 2
	BPF e820, 0x1E8, 2
	BPF edd, 0x1E9, 2
	BPF mbr, 0x1EA, 2
	movzwl 0x002(%ebx), %eax
	HEXF ext_mem_k, 4
	BPF alt_mem_k, 0x1E0, 8
	BPF rsdp_hi, 0x074, 8
	BPF rsdp, 0x070, 8
	BPF cmdline, 0x228, 8
	BPF cmdline_hi, 0x0C8, 8
	BPF setup_hi, 0x254, 8
	BPF setup, 0x250, 8
	BPF version, 0x206, 4
	BPF secure_boot, 0x1EC, 2
	call line_end32

	call line_begin32			# screen_info (the page's first 64 bytes)
	PUTS32 "state bpscreen"
	BPF mode, 0x006, 2
	BPF cols, 0x007, 2
	BPF lines, 0x00E, 2
	BPF isvga, 0x00F, 2
	BPF points, 0x010, 4
	BPF page, 0x004, 4
	BPF x, 0x000, 2
	BPF y, 0x001, 2
	BPF lfb, 0x018, 8
	BPF lfb_size, 0x01C, 8
	BPF width, 0x012, 4
	BPF height, 0x014, 4
	BPF depth, 0x016, 4
	BPF linelength, 0x024, 4
	BPF ext_lfb, 0x03A, 8
	call line_end32

	call line_begin32			# apm_bios_info (at 40h)
	PUTS32 "state bpapm"
	BPF version, 0x040, 4
	BPF cseg, 0x042, 4
	BPF offset, 0x044, 8
	BPF cseg_16, 0x048, 4
	BPF dseg, 0x04A, 4
	BPF flags, 0x04C, 4
	BPF cseg_len, 0x04E, 4
	BPF cseg_16_len, 0x050, 4
	BPF dseg_len, 0x052, 4
	call line_end32

	movzbl 0x1E8(%ebx), %ebp		# e820_table (bounds in EBP: the
	cmpl $BP_E820_MAX, %ebp			# printers use ECX)
	jbe 2f
	movl $BP_E820_MAX, %ebp
2:	xorl %edx, %edx
	leal 0x2D0(%ebx), %esi
3:	cmpl %ebp, %edx
	jae 4f
	call line_begin32
	PUTS32 "state bpe820"
	movl %edx, %eax
	HEXF n, 2
	movl 4(%esi), %eax
	HEXF base_hi, 8
	movl (%esi), %eax
	HEXF base, 8
	movl 12(%esi), %eax
	HEXF len_hi, 8
	movl 8(%esi), %eax
	HEXF len, 8
	movl 16(%esi), %eax
	HEXF type, 8
	call line_end32
	addl $20, %esi
	incl %edx
	jmp 3b

4:	movzbl 0x1EA(%ebx), %ebp		# edd_mbr_sig_buffer
	cmpl $BP_MBR_MAX, %ebp
	jbe 2f
	movl $BP_MBR_MAX, %ebp
2:	xorl %edx, %edx
3:	cmpl %ebp, %edx
	jae 4f
	call line_begin32
	PUTS32 "state bpmbr"
	movl %edx, %eax
	HEXF n, 2
	movl 0x290(%ebx,%edx,4), %eax
	HEXF sig, 8
	call line_end32
	incl %edx
	jmp 3b

4:	movzbl 0x1E9(%ebx), %ebp		# eddbuf: struct edd_info, 82 bytes
	cmpl $BP_EDD_MAX, %ebp
	jbe 2f
	movl $BP_EDD_MAX, %ebp
2:	xorl %edx, %edx
	leal 0xD00(%ebx), %esi
3:	cmpl %ebp, %edx
	jae 4f
	call line_begin32
	PUTS32 "state bpedd"
	movl %edx, %eax
	HEXF n, 2
	movzbl 0(%esi), %eax
	HEXF device, 2
	movzbl 1(%esi), %eax
	HEXF version, 2
	movzwl 2(%esi), %eax
	HEXF support, 4
	movzwl 4(%esi), %eax
	HEXF cyl, 4
	movzbl 6(%esi), %eax
	HEXF heads, 2
	movzbl 7(%esi), %eax
	HEXF spt, 2
	movzwl 8(%esi), %eax			# params: the int 13h AH=48h buffer
	HEXF plen, 4
	movzwl 10(%esi), %eax
	HEXF pflags, 4
	movl 12(%esi), %eax
	HEXF pcyl, 8
	movl 16(%esi), %eax
	HEXF pheads, 8
	movl 20(%esi), %eax
	HEXF pspt, 8
	movl 28(%esi), %eax
	HEXF sectors_hi, 8
	movl 24(%esi), %eax
	HEXF sectors, 8
	movzwl 32(%esi), %eax
	HEXF bps, 4
	call line_end32
	addl $82, %esi
	incl %edx
	jmp 3b

4:	movl 0x250(%ebx), %esi			# the setup_data chain
	movl 0x254(%ebx), %edi
	xorl %edx, %edx
3:	movl %esi, %eax
	orl %edi, %eax
	jz 4f
	call line_begin32
	PUTS32 "state bpsetup"
	movl %edx, %eax
	HEXF n, 2
	movl %edi, %eax
	HEXF addr_hi, 8
	movl %esi, %eax
	HEXF addr, 8
	testl %edi, %edi
	jnz 5f
	cmpl $BP_SETUP_MAX, %edx
	jae 6f
	movl 8(%esi), %eax			# struct setup_data: next, type, len, data
	HEXF type, 8
	movl 12(%esi), %eax
	HEXF len, 8
	call line_end32
	cmpl $1, 8(%esi)			# SETUP_E820_EXT: the entries past
	jne 7f					# the page's 128
	call e820ext32
7:	movl 4(%esi), %edi
	movl (%esi), %esi
	incl %edx
	jmp 3b
5:	PUTS32 " unreachable=1"			# above 4 GiB
	call line_end32
	jmp 4f
6:	PUTS32 " more=1"			# BP_SETUP_MAX links: a loop, or too long
	call line_end32

4:	movl 0x228(%ebx), %esi			# the command line
	testl %esi, %esi
	jz 8f
	cmpl $0, 0x0C8(%ebx)
	jne 8f
	xorl %ebp, %ebp
2:	cmpl $BP_CMDLINE_MAX, %ebp
	jae 3f
	cmpb $0, (%esi,%ebp)
	je 3f
	incl %ebp
	jmp 2b
3:	xorl %edx, %edx				# EBP: its length; 16 bytes a line
5:	cmpl %ebp, %edx
	jae 8f
	cmpl $BP_CMDLINE_DUMP, %edx
	jae 8f
	call line_begin32
	PUTS32 "state bpcmdline"
	movl %ebp, %eax
	HEXF len, 4
	movl %edx, %eax
	HEXF at, 4
	movl $4, %edi				# four fields of 4 bytes (8 hex digits)
6:	PUTS32 " b"
	movl $4, %eax
	subl %edi, %eax
	movl $1, %ecx
	call hex32
	PUTS32 "="
	pushl %edi
	movl $4, %edi
7:	movzbl (%esi,%edx), %eax
	movl $2, %ecx
	call hex32
	incl %edx
	decl %edi
	jnz 7b
	popl %edi
	decl %edi
	jnz 6b
	call line_end32
	jmp 5b
8:	call line_end32_if_open
	popal
9:	ret

# ESI = a SETUP_E820_EXT link: its entries (20 bytes each, at most
# BP_E820EXT_MAX) as `state bpe820ext` lines.  Keeps registers.
e820ext32:
	pushal
	movl 12(%esi), %eax			# len / 20 entries
	xorl %edx, %edx
	movl $20, %ecx
	divl %ecx
	movl %eax, %ebp
	cmpl $BP_E820EXT_MAX, %ebp
	jbe 1f
	movl $BP_E820EXT_MAX, %ebp
1:	addl $16, %esi				# the data after the link's header
	xorl %edx, %edx
2:	cmpl %ebp, %edx
	jae 3f
	call line_begin32
	PUTS32 "state bpe820ext"
	movl %edx, %eax
	HEXF n, 4
	movl 4(%esi), %eax
	HEXF base_hi, 8
	movl (%esi), %eax
	HEXF base, 8
	movl 12(%esi), %eax
	HEXF len_hi, 8
	movl 8(%esi), %eax
	HEXF len, 8
	movl 16(%esi), %eax
	HEXF type, 8
	call line_end32
	addl $20, %esi
	incl %edx
	jmp 2b
3:	popal
	ret

# End the line only if one is open (the bootparams line cut short above).
line_end32_if_open:
	cmpb $0, ck_on
	je 1f
	call line_end32
1:	ret

	.subsection 3
bz_rsi_hi:	.long 0			# RSI's high half at the 64-bit door
	.subsection 0
