"""The payload on the host: build it (build.py), read and check its ELF (image.py), the bzImage (bzimage.py), its
configuration block (config.py), patch it (patch.py), and the payload options every command
shares (options.py)."""

from __future__ import annotations

from .build import (LDSCRIPT_NAME, SOURCE_NAME, build, default_bzimage, default_elf, ensure_built,
                    payload_dir, write_bzimage)
from .config import (
                     CONFIG_MAGIC,
                     CONFIG_SIZE,
                     FLAG_DEBUG_EXIT,
                     FLAG_E9,
                     FLAG_INT19,
                     FLAG_KEEP_UART,
                     FLAG_MASK_NMI,
                     FLAG_VGA,
                     MAX_SKIP_STEPS,
                     NO_STEP,
                     Config,
)
from .image import (
                     KT_BASE_DEFAULT,
                     LOW_MEMORY_TOP,
                     MAX_KEXEC_SEGMENTS,
                     PAGE,
                     PAYLOAD_MAX,
                     RESERVED_LOW,
                     PayloadImage,
                     Segment,
                     Step,
                     page_ceil,
                     page_floor,
)
from .patch import patch, patched_config

__all__ = [
    "LDSCRIPT_NAME", "SOURCE_NAME", "build", "default_bzimage", "default_elf", "write_bzimage", "ensure_built", "payload_dir", "CONFIG_MAGIC", "CONFIG_SIZE",
    "FLAG_DEBUG_EXIT", "FLAG_E9", "FLAG_INT19", "FLAG_KEEP_UART", "FLAG_MASK_NMI", "FLAG_VGA",
    "MAX_SKIP_STEPS", "NO_STEP", "Config", "KT_BASE_DEFAULT", "LOW_MEMORY_TOP",
    "MAX_KEXEC_SEGMENTS", "PAGE", "PAYLOAD_MAX", "RESERVED_LOW", "PayloadImage", "Segment",
    "Step", "page_ceil", "page_floor", "patch", "patched_config",
]
