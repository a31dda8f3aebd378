"""The lab's Linux on an ISOLINUX CD, for firmware that cannot take QEMU's -kernel (the Bochs
BIOS runs none of QEMU's option ROMs): the same kernel, initramfs and command line as the lab
image, booted by the firmware from El Torito like any install CD.  Cached beside the image."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from ..errors import Exit, KexectestError
from ..fsutil import copy_atomic
from .image import LabImage

ISOLINUX_BIN = Path("/usr/lib/ISOLINUX/isolinux.bin")  # package isolinux
LDLINUX_C32 = Path("/usr/lib/syslinux/modules/bios/ldlinux.c32")  # package syslinux-common
CD_NAME = "linux.iso"


def _config(image: LabImage) -> str:
    return ("DEFAULT lab\nPROMPT 0\nTIMEOUT 0\nLABEL lab\n  KERNEL /vmlinuz\n"
            f"  INITRD /initrd.gz\n  APPEND {image.cmdline}\n")


def linux_cd(image: LabImage) -> Path:
    """The CD (built once per lab image: it lives in the image's cache directory)."""
    if image.directory is None:
        raise KexectestError("lab: the lab image has no cache directory for its CD",
                             Exit.LAB_BUILD)
    out = image.directory / CD_NAME
    stamp = image.directory / (CD_NAME + ".cfg")
    cfg = _config(image)
    if out.is_file() and stamp.is_file() and stamp.read_text() == cfg:
        return out
    for f, pkg in ((ISOLINUX_BIN, "isolinux"), (LDLINUX_C32, "syslinux-common")):
        if not f.is_file():
            raise KexectestError(f"lab build: {f} not found (apt-get install {pkg})",
                                 Exit.MISSING_TOOL)
    xorriso = shutil.which("xorriso")
    if not xorriso:
        raise KexectestError("lab build: xorriso not found (apt-get install xorriso)",
                             Exit.MISSING_TOOL)
    with tempfile.TemporaryDirectory(prefix="kt-linuxcd-") as tmp:
        root = Path(tmp) / "root"
        (root / "isolinux").mkdir(parents=True)
        shutil.copyfile(ISOLINUX_BIN, root / "isolinux" / "isolinux.bin")
        shutil.copyfile(LDLINUX_C32, root / "isolinux" / "ldlinux.c32")
        (root / "isolinux" / "isolinux.cfg").write_text(cfg)
        shutil.copyfile(image.kernel, root / "vmlinuz")
        shutil.copyfile(image.initrd, root / "initrd.gz")
        iso = Path(tmp) / CD_NAME
        p = subprocess.run([xorriso, "-as", "mkisofs", "-quiet", "-R", "-J", "-V", "KTLABLINUX",
                            "-o", str(iso), "-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat",
                            "-no-emul-boot", "-boot-load-size", "4", "-boot-info-table", str(root)],
                           capture_output=True, text=True)
        if p.returncode != 0:
            last = (p.stderr.strip() or p.stdout.strip()).splitlines()[-1:] or ["no message"]
            raise KexectestError(f"lab build: xorriso failed: {last[0]}", Exit.LAB_BUILD)
        copy_atomic(iso, out)
    stamp.write_text(cfg)
    return out
