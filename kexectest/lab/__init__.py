"""The virtual lab: a QEMU + SeaBIOS + Debian-kernel guest that kexecs into the payload.

`image` builds the guest (cached), `qemu` runs QEMU under a time limit, `runner` drives one
lab run through the same session code as `kexectest run --serial`.
"""
