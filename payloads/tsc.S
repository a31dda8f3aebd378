# tsc.S: time measured on the target.  Host-side time stamps say little about how long a BIOS
# call took (the collector stamps lines per read, a virtual UART does not pace, a real one adds
# its own wire time), so the payload times every call itself with the CPU's time-stamp counter.
#
# tsc_init (real mode, interrupts off, before the first step): where CPUID leaf 1 reports a TSC
# (EDX bit 4), count TSC ticks while PIT channel 2, gated through port 61h, counts down
# TSC_LATCH input clocks (1193182 Hz, 10 ms) in mode 0; its OUT2 (port 61h bit 5) rises at the
# end.  Each count is bracketed: the TSC is read before and after the write that starts the
# PIT, and before every poll of port 61h, so the count's two ends are known to within `err`
# ticks; an SMI, or a virtual CPU its host deschedules, widens the bracket it falls in.  Counts
# are repeated until one is bracketed to 1/1024 of its length (at most TSC_TRIES), and the
# sharpest is taken, unless even that one is blurred by more than 1/64.  Channel 0 (the BIOS's
# 18.2 Hz tick, step pit-init) is not touched; port 61h is restored.  Prints
# "KT state tsc present=0", or "present=1 khz=K ticks=T err=E min=A max=B tries=N latch=L"
# (T the count taken, E its bracket, A and B the shortest and longest of the N counts;
# khz=00000000: no count ended, or none was sharp enough, so no call is timed).
# docs/trace-format.md.
#
# tsc_mark / tsc_lap (runner.S do_step) read the TSC just before and after each call;
# put_us prints the difference in microseconds on the end line (" us=XXXXXXXX").
	.code16

	.set TSC_LATCH, 11932		# 10.0 ms of PIT input clocks (1193182 Hz)
	.set TSC_PIT_HZ, 1193182
	.set TSC_TRIES, 16
	.set TSC_BOUND, 0x100000	# polls of port 61h before the PIT counts as stopped

tsc_init:
	pushal
	movl $1, %eax
	cpuid
	testl $0x10, %edx			# CPUID.1:EDX bit 4: time-stamp counter
	jz 5f
	movb $1, tsc_present - K0
	inb $0x61, %al
	movb %al, tsc_p61 - K0
	movl $0xFFFFFFFF, %eax
	movl %eax, tsc_err - K0
	movl %eax, tsc_min - K0
	movw $TSC_TRIES, %di
0:	call tsc_count				# EAX ticks, EBX its bracket
	jc 4f					# the PIT never ended: khz stays 0
	cmpl tsc_min - K0, %eax
	jae 1f
	movl %eax, tsc_min - K0
1:	cmpl tsc_max - K0, %eax
	jbe 2f
	movl %eax, tsc_max - K0
2:	cmpl tsc_err - K0, %ebx			# the sharpest count so far
	jae 3f
	movl %ebx, tsc_err - K0
	movl %eax, tsc_ticks - K0
3:	incb tsc_tries - K0
	movl tsc_ticks - K0, %eax
	shrl $10, %eax
	cmpl %eax, tsc_err - K0			# sharp to 1/1024: enough
	jbe 7f
	decw %di
	jnz 0b
7:	movl tsc_ticks - K0, %eax
	shrl $6, %eax
	cmpl %eax, tsc_err - K0			# err > ticks / 64: too blurred to time by
	ja 4f
	movl tsc_ticks - K0, %eax
	movl $TSC_PIT_HZ, %ebx			# khz = ticks * 1193182 / (latch * 1000)
	mull %ebx
	movl $(TSC_LATCH * 1000), %ebx
	divl %ebx
	movl %eax, tsc_khz - K0
4:	movb tsc_p61 - K0, %al
	outb %al, $0x61
5:	call line_begin
	PUTS "state tsc"
	movzbl tsc_present - K0, %eax
	FIELD present, %eax, 1
	cmpb $0, tsc_present - K0
	je 6f
	FIELD khz, tsc_khz-K0, 8
	FIELD ticks, tsc_ticks-K0, 8
	FIELD err, tsc_err-K0, 8
	FIELD min, tsc_min-K0, 8
	FIELD max, tsc_max-K0, 8
	movzbl tsc_tries - K0, %eax
	FIELD tries, %eax, 2
	FIELD latch, $TSC_LATCH, 4
6:	call line_end
	popal
	ret

# One count: EAX = TSC ticks while PIT channel 2 counts TSC_LATCH clocks, EBX = how many ticks
# its two ends are uncertain by; CF=1 when the output never rose.  The TSC's low dword is
# enough: a count is far shorter than 2^32 ticks.  S0/S1: the TSC before and after the write
# that starts the count; A: before the last poll that saw OUT2 low; B: after the poll that saw
# it high.  Relative to S0: ticks = (A + B - S1) / 2, bracket = (B - A) + S1.
tsc_count:
	movb tsc_p61 - K0, %al
	andb $0xFC, %al				# speaker data off,
	orb $0x01, %al				# channel 2 gate high
	outb %al, $0x61
	movb $0xB0, %al				# channel 2, low then high byte, mode 0
	outb %al, $0x43
	movb $(TSC_LATCH & 0xFF), %al
	outb %al, $0x42
	rdtsc
	movl %eax, %esi				# S0
	movb $(TSC_LATCH >> 8), %al
	outb %al, $0x42				# the count starts
	rdtsc
	subl %esi, %eax
	movl %eax, tsc_s1 - K0			# S1
	movl %eax, %ebx				# A: OUT2 is low from the start
	movl $TSC_BOUND, %ecx
1:	rdtsc
	subl %esi, %eax
	movl %eax, tsc_a - K0			# the TSC before this poll
	inb $0x61, %al
	testb $0x20, %al			# OUT2: terminal count reached
	jnz 2f
	movl tsc_a - K0, %ebx
	decl %ecx
	jnz 1b
	stc
	ret
2:	rdtsc
	subl %esi, %eax				# B
	movl %eax, %edx
	subl %ebx, %edx
	addl tsc_s1 - K0, %edx			# the bracket
	addl %ebx, %eax
	subl tsc_s1 - K0, %eax
	shrl $1, %eax				# the count
	movl %edx, %ebx
	clc
	ret

tsc_mark:					# the call starts now
	cmpl $0, tsc_khz - K0
	je 1f
	pushal
	rdtsc
	movl %eax, tsc_t0 - K0
	movl %edx, tsc_t0 + 4 - K0
	popal
1:	ret

# The call ended: tsc_us = ticks since tsc_mark * 1000 / khz, as ms (64 by 32 bits in two
# divisions) * 1000 plus the remainder's microseconds; FFFFFFFF when that does not fit 32 bits
# (71 minutes or more, or a TSC that went backwards).
tsc_lap:
	cmpl $0, tsc_khz - K0
	je 9f
	pushal
	rdtsc
	subl tsc_t0 - K0, %eax
	sbbl tsc_t0 + 4 - K0, %edx
	movl %eax, %ebx
	movl %edx, %eax
	xorl %edx, %edx
	divl tsc_khz - K0			# high dword of the ms
	testl %eax, %eax
	jnz 8f
	movl %ebx, %eax
	divl tsc_khz - K0			# EAX = ms, EDX = the remainder's ticks
	cmpl $4294967, %eax
	jae 8f
	imull $1000, %eax, %ecx
	movl %edx, %eax
	movl $1000, %ebx
	mull %ebx
	divl tsc_khz - K0			# below 1000: the remainder is below khz
	addl %ecx, %eax				# at most 4294966999
	jmp 7f
8:	movl $0xFFFFFFFF, %eax
7:	movl %eax, tsc_us - K0
	popal
9:	ret

put_us:						# " us=XXXXXXXX" on an end line, where timed
	cmpl $0, tsc_khz - K0
	je 1f
	FIELD us, tsc_us-K0, 8
1:	ret

	.subsection 3
	.p2align 2
tsc_t0:		.long 0, 0		# TSC at the start of the interval
tsc_khz:	.long 0			# TSC ticks per millisecond; 0: calls are not timed
tsc_ticks:	.long 0			# TSC ticks over TSC_LATCH PIT clocks: the sharpest count
tsc_err:	.long 0			# how uncertain that count's two ends are, in ticks
tsc_min:	.long 0			# the shortest and longest of the counts
tsc_max:	.long 0
tsc_s1:		.long 0			# within a count (tsc_count)
tsc_a:		.long 0
tsc_us:		.long 0			# the last call's duration
tsc_present:	.byte 0
tsc_tries:	.byte 0			# counts made
tsc_p61:	.byte 0
	.subsection 0
