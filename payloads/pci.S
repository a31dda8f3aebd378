# pci.S: the PCI functions as the previous kernel left them, read before any
# BIOS call.  The BIOS's own disk, USB and video drivers set their devices up
# once at POST; whether a device still decodes I/O and memory and may master
# the bus after the previous kernel shut it down is what decides whether those
# drivers can still run.  Configuration mechanism 1 (ports CF8h/CFCh) by
# 32-bit port I/O, bus 0 and every bus behind a PCI-PCI or CardBus bridge.
# The walk is bounded: a bus is scanned at most once (two 256-bit maps,
# queued and done), so at most 256 buses and no loops, whatever the bridges
# say.  CF8h is restored to what it held at entry.  Lines (docs/trace-format.md):
#   KT state pci present=0|1 [cf8=XXXXXXXX]
#   KT state pcifn bdf=BB:DD.F vendor=VVVV device=DDDD class=CCSSPP cmd=XXXX hdr=HH [sec=SS sub=UU]
	.code16

	.set PCI_ADDR, 0xCF8
	.set PCI_DATA, 0xCFC

# CL = register -> EAX = that dword of pci_bus / pci_devfn.  Keeps the rest.
pci_cfg:
	movzbl pci_bus - K0, %eax
	shll $8, %eax
	movb pci_devfn - K0, %al
	shll $8, %eax
	movb %cl, %al
	orl $0x80000000, %eax
	pushw %dx
	movw $PCI_ADDR, %dx
	outl %eax, %dx
	movw $PCI_DATA, %dx
	inl %dx, %eax
	popw %dx
	ret

pci_scan:
	movw $PCI_ADDR, %dx			# mechanism 1: CF8h holds what we write
	inl %dx, %eax
	movl %eax, pci_cf8 - K0
	movl $0x80000000, %eax
	outl %eax, %dx
	inl %dx, %eax
	movl %eax, %ebx
	call line_begin
	PUTS "state pci"
	cmpl $0x80000000, %ebx
	je 1f
	PUTS " present=0"			# no PCI (an ISA machine): nothing more
	call line_end
	ret
1:	PUTS " present=1"
	FIELD cf8, pci_cf8-K0, 8
	call line_end
	movw $(pci_queued - K0), %di		# both maps empty, bus 0 queued
	movw $64, %cx
	xorb %al, %al
	rep stosb
	movb $1, pci_queued - K0

pci_next_bus:					# the lowest bus queued and not done
	xorw %bx, %bx
2:	btw %bx, pci_queued - K0
	jnc 3f
	btsw %bx, pci_done - K0
	jnc pci_bus_scan
3:	incw %bx
	cmpw $256, %bx
	jb 2b
	movl pci_cf8 - K0, %eax			# all done: CF8h as we found it
	movw $PCI_ADDR, %dx
	outl %eax, %dx
	ret

pci_bus_scan:					# BL = bus; devfn 00h..FFh
	movb %bl, pci_bus - K0
	movb $0, pci_devfn - K0
4:	xorb %cl, %cl
	call pci_cfg
	cmpw $0xFFFF, %ax			# no function here
	je 5f
	testw %ax, %ax
	jz 5f
	movl %eax, pci_id - K0
	movb $0x0C, %cl				# header type: byte 0Eh
	call pci_cfg
	shrl $16, %eax
	movb %al, pci_hdr - K0
	call pci_print
	testb $7, pci_devfn - K0
	jnz 6f
	testb $0x80, pci_hdr - K0		# function 0 says: multi-function?
	jnz 6f
5:	testb $7, pci_devfn - K0		# no function 0 or single-function:
	jnz 6f					# go on with the next device
	orb $7, pci_devfn - K0
6:	incb pci_devfn - K0
	jnz 4b
	jmp pci_next_bus

# One "KT state pcifn ..." line for the function at pci_bus / pci_devfn; a
# bridge's secondary bus is queued.
pci_print:
	call line_begin
	PUTS "state pcifn bdf="
	movzbl pci_bus - K0, %eax
	movw $2, %cx
	call puthex
	movb $':', %al
	call putc
	movzbl pci_devfn - K0, %eax
	shrb $3, %al
	call puthex
	movb $'.', %al
	call putc
	movzbl pci_devfn - K0, %eax
	andb $7, %al
	movw $1, %cx
	call puthex
	FIELDW vendor, pci_id-K0
	FIELDW device, pci_id+2-K0
	movb $0x08, %cl				# class, subclass, prog-if (rev dropped)
	call pci_cfg
	shrl $8, %eax
	KEY class
	movw $6, %cx
	call putfield
	movb $0x04, %cl				# the whole command word
	call pci_cfg
	FIELD cmd, %eax, 4
	movzbl pci_hdr - K0, %eax
	FIELD hdr, %eax, 2
	movb pci_hdr - K0, %al
	andb $0x7F, %al
	cmpb $1, %al				# PCI-PCI bridge
	je 1f
	cmpb $2, %al				# CardBus bridge: same bus bytes
	jne 2f
1:	movb $0x18, %cl				# primary, secondary, subordinate
	call pci_cfg
	movl %eax, pci_busregs - K0
	movzbl pci_busregs + 1 - K0, %eax
	FIELD sec, %eax, 2
	movzbl pci_busregs + 2 - K0, %eax
	FIELD sub, %eax, 2
	movzbw pci_busregs + 1 - K0, %bx
	testw %bx, %bx				# an unconfigured bridge: nothing behind
	jz 2f
	btsw %bx, pci_queued - K0
2:	call line_end
	ret
