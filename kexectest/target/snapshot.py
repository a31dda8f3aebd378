"""The "before" snapshot: the running kernel's view of the firmware, printed on the target's
console just before kexec, so the collector can set the BIOS's answers after kexec beside them.

Each line stands alone (`KTSNAP <kind> key=value ... ~CCCC`, docs/snapshot-format.md): the block
crosses a serial console shared with printk, so a line may be cut, interleaved or prefixed, and
the parser keeps every line it can verify and drops the rest.

Standard library only and Python 3.6 syntax: the target agent carries this module, and the
shell agent (target/shell.py) prints the same lines from the same tables.
"""

import os
import platform
import re
import subprocess
from pathlib import Path

from ..trace import checksum

PREFIX = "KTSNAP"
VERSION = 1
EDD_KEYS = (
    "mbr_signature", "sectors", "default_cylinders", "default_heads", "default_sectors_per_track",
    "legacy_max_cylinder", "legacy_max_head", "legacy_sectors_per_track", "extensions",
    "interface", "host_bus", "version", "info_flags",
)
# display class devices: what each line carries (read_drm / read_fb)
CLASS_DEVICE_KEYS = {"drm": ("id", "device", "subsystem", "driver"),
                     "fb": ("id", "name", "device", "subsystem", "driver")}
DMI_KEYS = (
    "sys_vendor", "product_name", "product_version", "bios_vendor", "bios_version", "bios_date",
    "board_vendor", "board_name",
)
_E820_RE = re.compile(r"BIOS-e820: \[mem 0x([0-9a-fA-F]+)-0x([0-9a-fA-F]+)\] (.+?)\s*$")
_BARE_RE = re.compile(r'^[!#-\[\]-~]+$')  # printable ASCII without space, '"' and '\'
_FIELD_RE = re.compile(r'([A-Za-z0-9_.-]+)=("(?:[^"\\]|\\.)*"|[^\s"]*)')
_ESC_RE = re.compile(r'\\(x[0-9a-fA-F]{2}|.)')


# ---------------------------------------------------------------------------------------------
# collecting (on the machine under test)


def _read(path: Path) -> "str | None":
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return None


def read_memmap(root: Path = Path("/sys/firmware/memmap")) -> "list[dict]":
    """The firmware map as the kernel kept it at boot (CONFIG_FIRMWARE_MEMMAP)."""
    out = []
    try:
        dirs = sorted((d for d in root.iterdir() if d.name.isdigit()), key=lambda d: int(d.name))
    except OSError:
        return out
    for d in dirs:
        start, end, kind = (_read(d / n) for n in ("start", "end", "type"))
        if start is None or end is None:
            continue
        try:
            out.append({"start": int(start, 0), "end": int(end, 0), "type": kind or ""})
        except ValueError:
            continue
    return out


def _kmsg_messages(limit: int = 200_000) -> "list[str] | None":
    """Every record still in the kernel log via /dev/kmsg (non-blocking), or None."""
    try:
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    msgs = []
    try:
        while len(msgs) < limit:
            try:
                rec = os.read(fd, 16384)
            except BlockingIOError:
                break
            except BrokenPipeError:
                continue  # a record was overwritten while we read: carry on with the next
            except OSError:
                break
            if not rec:
                break
            head, _, msg = rec.decode("utf-8", "replace").partition(";")
            msgs.append(msg.split("\n", 1)[0])
    finally:
        os.close(fd)
    return msgs


def read_e820() -> "tuple[list[dict], str]":
    """The boot-time BIOS-e820 lines from the kernel log: (entries, source)."""
    msgs, source = _kmsg_messages(), "kmsg"
    if msgs is None:
        try:
            proc = subprocess.run(["dmesg"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  universal_newlines=True, timeout=10, errors="replace")
            msgs, source = (proc.stdout.splitlines(), "dmesg") if proc.returncode == 0 else ([], "none")
        except (OSError, subprocess.TimeoutExpired):
            msgs, source = [], "none"
    out = []
    for m in msgs:
        hit = _E820_RE.search(m)
        if hit:
            out.append({"start": int(hit[1], 16), "end": int(hit[2], 16), "type": hit[3]})
    if not out and source != "none":
        source += "-empty"
    return out, source


def read_edd(root: Path = Path("/sys/firmware/edd")) -> "dict[str, dict[str, str]]":
    """int13_devXX attributes the kernel got from the BIOS at boot (CONFIG_EDD)."""
    out = {}
    try:
        devs = sorted(d for d in root.iterdir() if d.name.startswith("int13_dev"))
    except OSError:
        return out
    for d in devs:
        vals = {}
        for key in EDD_KEYS:
            v = _read(d / key)
            if v is not None:
                vals[key] = "; ".join(x.strip() for x in v.splitlines() if x.strip())
        # present when edd.ko resolved the BIOS's device path to a PCI function
        pci_dev = _link_name(d / "pci_dev")
        if pci_dev is not None:
            vals["pci_dev"] = pci_dev
        out[d.name[len("int13_dev"):]] = vals
    return out


def read_dmi(root: Path = Path("/sys/class/dmi/id")) -> "dict[str, str]":
    values = ((k, _read(root / k)) for k in DMI_KEYS)
    return {k: v for k, v in values if v is not None}


def _link_name(path: Path) -> "str | None":
    """The name of what a sysfs symlink points to (a driver, module or device), resolved, so
    `../..`-style targets name their directory too; None when there is no such link."""
    try:
        if not path.is_symlink():
            return None
        return Path(os.path.realpath(path)).name
    except OSError:
        return None


def _config_word(dev: Path, offset: int) -> "int | None":
    """A 16-bit word of a function's configuration space (the first 64 bytes are readable by
    anyone; root reads it all)."""
    try:
        with open(dev / "config", "rb") as f:
            f.seek(offset)
            b = f.read(2)
    except OSError:
        return None
    return int.from_bytes(b, "little") if len(b) == 2 else None


def read_pci(root: Path = Path("/sys/bus/pci/devices")) -> "list[dict]":
    """Every PCI function with the driver bound to it (None: no driver) and its command register
    as the running kernel sees it: the "before" side of what the payload's scan reads after kexec."""
    out = []
    try:
        devs = sorted(root.iterdir(), key=lambda d: d.name)
    except OSError:
        return out
    for d in devs:
        fn = {"bdf": d.name}
        for key in ("vendor", "device", "class"):
            fn[key] = _int(_read(d / key))
        fn["cmd"] = _config_word(d, 4)
        fn["driver"] = _link_name(d / "driver")
        fn["module"] = _link_name(d / "driver" / "module") if fn["driver"] else None
        fn["power"] = _read(d / "power_state")  # D0, D3hot, unknown (Linux 5.19 and later)
        fn["boot_vga"] = _int(_read(d / "boot_vga"))  # VGA-class functions only
        out.append(fn)
    return out


def read_modules(path: Path = Path("/proc/modules")) -> "list[str] | None":
    """Loaded modules in /proc/modules order; None when there is no module support to read."""
    text = _read(path)
    if text is None:
        return None
    return [ln.split()[0] for ln in text.splitlines() if ln.split()]


def _device_of(node: Path) -> dict:
    """What a class device (drm card, fb, input) sits on: the device's name, its bus, its driver."""
    dev = node / "device"
    return {"device": _link_name(dev), "subsystem": _link_name(dev / "subsystem"),
            "driver": _link_name(dev / "driver")}


def read_drm(root: Path = Path("/sys/class/drm")) -> "list[dict]":
    """DRM cards (not their connectors, card0-VGA-1 ...) and the device each one drives."""
    try:
        cards = sorted((d for d in root.iterdir() if re.fullmatch(r"card\d+", d.name)),
                       key=lambda d: int(d.name[4:]))
    except OSError:
        return []
    return [{"id": c.name, **_device_of(c)} for c in cards]


def read_fb(root: Path = Path("/sys/class/graphics")) -> "list[dict]":
    """Framebuffer devices: the driver's name for it and the device under it (a PCI VGA function,
    or a platform device such as vesa-framebuffer.0 / simple-framebuffer.0)."""
    try:
        fbs = sorted((d for d in root.iterdir() if re.fullmatch(r"fb\d+", d.name)),
                     key=lambda d: int(d.name[2:]))
    except OSError:
        return []
    return [{"id": f.name, "name": _read(f / "name"), **_device_of(f)} for f in fbs]


_PCI_BDF_RE = re.compile(r"^[0-9a-f]{4,}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")


def read_input(root: Path = Path("/sys/class/input")) -> "list[dict]":
    """Input devices: name, the kernel's phys path (isa0060/serio0/input0 for the i8042's keyboard
    port, usb-0000:00:14.0-3/input0 for a USB device on that host controller), the event-type
    bitmap (EV_KEY and EV_REP together: a keyboard), and the nearest PCI function above it."""
    try:
        nodes = sorted((d for d in root.iterdir() if re.fullmatch(r"input\d+", d.name)),
                       key=lambda d: int(d.name[5:]))
    except OSError:
        return []
    out = []
    for n in nodes:
        ev = _read(n / "capabilities" / "ev")
        out.append({"id": n.name, "name": _read(n / "name"), "phys": _read(n / "phys") or None,
                    "ev": int(ev, 16) if ev and re.fullmatch(r"[0-9a-fA-F]+", ev) else None,
                    "pci": _nearest_pci(n)})
    return out


def _nearest_pci(node: Path) -> "str | None":
    """The last PCI function in a sysfs node's resolved path: the controller it hangs off."""
    pci = None
    for part in Path(os.path.realpath(node)).parts:
        if _PCI_BDF_RE.match(part):
            pci = part
    return pci


def _mbr_signature(dev: Path) -> "int | None":
    """The disk signature at 1B8h of a block device's first sector (root only), the value the
    kernel's EDD keeps for each BIOS drive: the two meet where the BIOS gives no device path."""
    try:
        with open(dev, "rb") as f:
            sector = f.read(512)
    except OSError:
        return None
    return int.from_bytes(sector[0x1B8:0x1BC], "little") if len(sector) == 512 else None


SCSI_TYPE_ROM = "5"  # /sys/block/srN/device/type of an optical drive


def read_block(root: Path = Path("/sys/block"), dev_root: Path = Path("/dev")) -> "list[dict]":
    """Disks on a device (not loop, zram, md, dm): size, the PCI function they sit on, and the
    MBR signature -- read only where there is a medium (size > 0) and not from optical drives,
    so none spins up; USB sticks, which call themselves removable, are read."""
    try:
        disks = sorted(d for d in root.iterdir() if (d / "device").exists())
    except OSError:
        return []
    out = []
    for d in disks:
        sectors = _int(_read(d / "size"))
        readable = bool(sectors) and _read(d / "device" / "type") != SCSI_TYPE_ROM
        out.append({"name": d.name, "sectors": sectors,
                    "removable": _int(_read(d / "removable")), "pci": _nearest_pci(d),
                    "mbr_signature": _mbr_signature(dev_root / d.name) if readable else None})
    return out


def read_devices(sys_root: Path = Path("/sys"), proc_root: Path = Path("/proc"),
                 dev_root: Path = Path("/dev")) -> dict:
    """The devices part of the snapshot: PCI functions and their drivers, modules, display and
    input owners, disks (each from its own sysfs directory, so a fixture tree stands in)."""
    return {"pci": read_pci(sys_root / "bus" / "pci" / "devices"),
            "modules": read_modules(proc_root / "modules"),
            "drm": read_drm(sys_root / "class" / "drm"),
            "fb": read_fb(sys_root / "class" / "graphics"),
            "input": read_input(sys_root / "class" / "input"),
            "block": read_block(sys_root / "block", dev_root)}


def collect() -> dict:
    """The snapshot as a dict, in the shape `parse_snapshot` returns."""
    uname = platform.uname()
    e820, e820_source = read_e820()
    snap = {
        "version": VERSION,
        "kernel": {"release": uname.release, "machine": uname.machine,
                   "cmdline": _read(Path("/proc/cmdline")) or ""},
        "boot_mode": "efi" if Path("/sys/firmware/efi").exists() else "bios",
        "memmap": read_memmap(),
        "e820": e820,
        "e820_source": e820_source,
        "edd": read_edd(),
        "dmi": read_dmi(),
        **read_devices(),
    }
    snap["basemem_kib"], snap["basemem_source"] = basemem(snap)
    return snap


def basemem(snap: dict) -> "tuple[int | None, str | None]":
    """Conventional memory in KiB from the first usable range at 0 (what int 12h should say)."""
    for key, usable in (("e820", "usable"), ("memmap", "System RAM")):
        for e in snap.get(key) or ():
            if e["start"] == 0 and e["type"] == usable:
                return min(e["end"] + 1, 0xA0000) // 1024, key
    return None, None


# ---------------------------------------------------------------------------------------------
# formatting


def quote(value: str) -> str:
    """A value as printed: bare when safe, else "double-quoted" with \\\\, \\" and \\xNN."""
    if value and _BARE_RE.match(value):
        return value
    out = []
    for ch in value:
        if ch in '"\\':
            out.append("\\" + ch)
        elif " " <= ch <= "~":
            out.append(ch)
        else:
            out.extend(f"\\x{b:02x}" for b in ch.encode("utf-8"))
    return '"' + "".join(out) + '"'


def unquote(token: str) -> str:
    if not (len(token) >= 2 and token[0] == token[-1] == '"'):
        return token
    raw = bytearray()
    pos = 0
    body = token[1:-1]
    for m in _ESC_RE.finditer(body):
        raw += body[pos:m.start()].encode("utf-8")
        esc = m[1]
        raw += bytes([int(esc[1:], 16)]) if len(esc) == 3 and esc[0] == "x" else esc.encode()
        pos = m.end()
    raw += body[pos:].encode("utf-8")
    return raw.decode("utf-8", "replace")


def _line(kind: str, fields) -> str:
    body = " ".join([PREFIX, kind] + [f"{k}={quote(str(v))}" for k, v in fields])
    return f"{body} ~{checksum(body.encode('ascii')):04X}"


def format_lines(snap: dict) -> "list[str]":
    """The printed block for a snapshot dict (from `collect`)."""
    lines = [_line("begin", [("v", VERSION)])]
    k = snap.get("kernel", {})
    lines.append(_line("kernel", [(n, k.get(n, "")) for n in ("release", "machine", "cmdline")]))
    lines.append(_line("boot", [("mode", snap.get("boot_mode", ""))]))
    for key in ("memmap", "e820"):
        for i, e in enumerate(snap.get(key) or ()):
            lines.append(_line(key, [("i", i), ("start", hex(e["start"])), ("end", hex(e["end"])),
                                     ("type", e["type"])]))
    lines.append(_line("e820-source", [("kind", snap.get("e820_source") or "none")]))
    for dev, vals in sorted((snap.get("edd") or {}).items()):
        lines.append(_line("edd", [("dev", dev)] + list(vals.items())))
    if snap.get("dmi"):
        lines.append(_line("dmi", snap["dmi"].items()))
    lines.extend(_device_lines(snap))
    if snap.get("basemem_kib") is not None:
        lines.append(_line("basemem", [("kib", snap["basemem_kib"]),
                                       ("source", snap.get("basemem_source"))]))
    lines.append(_line("end", [("lines", len(lines) + 1)]))
    return lines


MODULES_PER_LINE = 160  # characters of module names a `modules` line carries at most


def _hex(v, digits: int) -> "str | None":
    return None if v is None else f"0x{v:0{digits}x}"


def _present(fields) -> list:
    return [(k, v) for k, v in fields if v is not None]


def _device_lines(snap: dict) -> "list[str]":
    """pci, modules, drm, fb and input lines (kinds absent when their source was)."""
    lines = []
    for fn in snap.get("pci") or ():
        lines.append(_line("pci", _present([
            ("bdf", fn["bdf"]), ("vendor", _hex(fn.get("vendor"), 4)),
            ("device", _hex(fn.get("device"), 4)), ("class", _hex(fn.get("class"), 6)),
            ("cmd", _hex(fn.get("cmd"), 4)), ("driver", fn.get("driver") or ""),
            ("module", fn.get("module")), ("power", fn.get("power")),
            ("boot_vga", fn.get("boot_vga"))])))
    mods = snap.get("modules")
    if mods is not None:
        chunks = [[]]
        for m in mods:
            if chunks[-1] and len(",".join(chunks[-1] + [m])) > MODULES_PER_LINE:
                chunks.append([])
            chunks[-1].append(m)
        for i, chunk in enumerate(chunks):
            lines.append(_line("modules", [("i", i), ("names", ",".join(chunk))]))
    for kind, keys in CLASS_DEVICE_KEYS.items():
        for d in snap.get(kind) or ():
            lines.append(_line(kind, _present((k, d.get(k)) for k in keys)))
    for d in snap.get("block") or ():
        lines.append(_line("block", _present([
            ("name", d["name"]), ("sectors", d.get("sectors")), ("removable", d.get("removable")),
            ("pci", d.get("pci")), ("mbr_signature", _hex(d.get("mbr_signature"), 8))])))
    for d in snap.get("input") or ():
        lines.append(_line("input", _present([("id", d["id"]), ("name", d.get("name")),
                                              ("phys", d.get("phys")), ("ev", _hex(d.get("ev"), 1)),
                                              ("pci", d.get("pci"))])))
    return lines


def snapshot_lines() -> "list[str]":
    return format_lines(collect())


# ---------------------------------------------------------------------------------------------
# parsing (on the collector)


def _verify(raw: str):
    """(kind, fields) for a good line, False for a damaged KTSNAP line, None for other text."""
    pos = raw.find(PREFIX + " ")
    if pos < 0:
        return None
    text = raw[pos:].rstrip("\r\n\t \0")
    body, sep, cs = text.rpartition(" ~")
    if not sep or len(cs) != 4:
        return False
    try:
        if int(cs, 16) != checksum(body.encode("utf-8", "replace")):
            return False
    except ValueError:
        return False
    parts = body.split(" ", 2)
    if len(parts) < 2:
        return False
    rest = parts[2] if len(parts) > 2 else ""
    fields = {m[1]: unquote(m[2]) for m in _FIELD_RE.finditer(rest)}
    return parts[1], fields


def _int(v: "str | None") -> "int | None":
    if v is None or len(v) > 20:  # wider than 64 bits: not a number the snapshot prints
        return None
    try:
        return int(v, 0)
    except ValueError:
        return None


def _maybe_int(v: str):
    if not re.fullmatch(r"\d+|0x[0-9a-fA-F]+", v):
        return v
    n = _int(v)
    return v if n is None else n


def parse_snapshot(lines) -> "dict | None":
    """The last snapshot block found in console text, or None when there is none.

    Tolerant: lines may carry a console prefix or timestamps, CRs and NULs; damaged lines are
    counted in "bad_lines" and skipped; a block cut short has "complete": False.
    """
    snap = None
    bad = seen = 0
    module_chunks: dict = {}
    for raw in lines:
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8", "replace")
        got = _verify(raw)
        if got is None:
            continue
        if got is False:
            bad += 1
            continue
        kind, f = got
        seen += 1
        if kind == "begin" or snap is None:
            snap = {"version": _int(f.get("v")) if kind == "begin" else None, "complete": False,
                    "kernel": {}, "boot_mode": None, "memmap": [], "e820": [],
                    "e820_source": None, "edd": {}, "dmi": {}, "pci": [], "modules": None,
                    "drm": [], "fb": [], "input": [], "block": [], "basemem_kib": None,
                    "basemem_source": None, "bad_lines": 0}
            module_chunks = {}
            bad, seen = 0, 1
            if kind == "begin":
                continue
        if kind == "kernel":
            snap["kernel"] = f
        elif kind == "boot":
            snap["boot_mode"] = f.get("mode")
        elif kind in ("memmap", "e820"):
            start, end = _int(f.get("start")), _int(f.get("end"))
            if start is not None and end is not None:
                snap[kind].append({"start": start, "end": end, "type": f.get("type", "")})
        elif kind == "e820-source":
            snap["e820_source"] = f.get("kind")
        elif kind == "edd":
            dev = f.pop("dev", "?")
            snap["edd"][dev] = {k: _maybe_int(v) for k, v in f.items()}
        elif kind == "dmi":
            snap["dmi"] = f
        elif kind == "pci" and "bdf" in f:
            snap["pci"].append({
                "bdf": f["bdf"], **{k: _int(f.get(k)) for k in ("vendor", "device", "class", "cmd")},
                "driver": f.get("driver") or None, "module": f.get("module"),
                "power": f.get("power"), "boot_vga": _int(f.get("boot_vga"))})
        elif kind == "modules":
            module_chunks[_int(f.get("i"))] = [m for m in f.get("names", "").split(",") if m]
            snap["modules"] = [m for _, chunk in sorted(module_chunks.items(),
                                                         key=lambda kv: kv[0] or 0) for m in chunk]
        elif kind in CLASS_DEVICE_KEYS and "id" in f:
            snap[kind].append({k: f.get(k) for k in CLASS_DEVICE_KEYS[kind]})
        elif kind == "input" and "id" in f:
            snap["input"].append({"id": f["id"], "name": f.get("name"), "phys": f.get("phys"),
                                  "ev": _int(f.get("ev")), "pci": f.get("pci")})
        elif kind == "block" and "name" in f:
            snap["block"].append({"name": f["name"], "sectors": _int(f.get("sectors")),
                                  "removable": _int(f.get("removable")), "pci": f.get("pci"),
                                  "mbr_signature": _int(f.get("mbr_signature"))})
        elif kind == "basemem":
            snap["basemem_kib"], snap["basemem_source"] = _int(f.get("kib")), f.get("source")
        elif kind == "end":
            # complete only when no line of the block went missing
            snap["complete"] = _int(f.get("lines")) == seen
        snap["bad_lines"] = bad
    if snap is not None:
        snap["bad_lines"] = bad
    return snap
