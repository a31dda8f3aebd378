"""The boot_params page a loader handed over (the payload's `state bootparams` and `bp*` lines,
docs/trace-format.md) decoded, and set field by field against what the BIOS answered in the
same run: E820 entries, base and extended memory, each EDD drive, the video mode.

Both the kernel (`kexec_file_load`) and kexec-tools fill that page from what the running
kernel knows instead of asking the BIOS; this says where the two disagree and classes every
difference from the evidence alone: `expected` where the page's value is what the boot
protocol lets a loader derive (the kernel reserving RAM for itself, a size computed from the
E820 map), `wrong` where a firmware range is lost or changed, a drive is missing or a value
matches nothing the firmware said.  A page that breaks its own rules (counts past the table,
a setup_data chain that does not end) is reported, never followed.
"""

from __future__ import annotations

from . import decoders as dec
from .before_after import _merged

E820_MAX, EDD_MAX, MBR_MAX, SETUP_MAX = 128, 6, 16, 16
GROUPS = ("bootparams", "bpscreen", "bpapm", "bpe820", "bpe820ext", "bpmbr", "bpedd",
          "bpsetup", "bpcmdline")
E820EXT_MAX = 1024  # SETUP_E820_EXT entries the payload prints of one link
# setup_data types (arch/x86/include/uapi/asm/bootparam.h)
SETUP_TYPES = {1: "E820_EXT", 2: "DTB", 3: "PCI", 4: "EFI", 5: "APPLE_PROPERTIES",
               6: "JAILHOUSE", 7: "CC_BLOB", 8: "IMA", 9: "RNG_SEED"}
LOADERS = {0xD: "kexec (kexec_file_load or kexec-tools)", 0x7: "GRUB", 0xB: "QEMU",
           0x0: "LILO", 0x1: "Loadlin", 0x3: "SYSLINUX", 0x4: "Etherboot/gPXE/iPXE",
           0x5: "ELILO", 0x8: "U-Boot", 0x9: "Xen", 0xA: "Gujin", 0xE: "extended",
           0xF: "special"}
RAM, RESERVED_KERN = 1, 128
# the bzImage's door the page came through (bzimage.S's bz_door); a real-mode entry's page
# is the setup part the loader filled, and the setup code asks the BIOS for the rest itself
DOORS = {1: "32-bit", 2: "64-bit", 3: "real-mode"}
REAL_MODE_WHY = ("entered in real mode: the setup code asks the BIOS for it itself, a loader "
                 "need not fill it")
KERNEL_RESERVED = {2, RESERVED_KERN}  # what a kernel marks RAM it keeps for itself


def _num(fields: dict, key: str, default=0) -> int:
    v = fields.get(key)
    if isinstance(v, int):
        return v
    try:
        return int(v, 16)
    except (TypeError, ValueError):
        return default


def _wide(f: dict, lo: str, hi: str) -> int:
    return _num(f, hi) << 32 | _num(f, lo)


def decode(records) -> dict | None:
    """The page from the payload's records of the GROUPS (in trace order); None when the
    payload printed none (it was not entered with a page)."""
    head = next((r.fields for r in records if r.name == "bootparams"), None)
    if head is None:
        return None
    by = {g: [r.fields for r in records if r.name == g] for g in GROUPS}
    problems: list[str] = []
    door = _num(head, "door", None)
    out: dict = {"address": _wide(head, "addr", "hi"), "door": DOORS.get(door), "problems": problems}
    if _num(head, "hi"):
        problems.append("the page lies above 4 GiB, out of the payload's reach: not read")
        out["readable"] = False
        return out
    if head.get("overwritten"):
        problems.append("the page lay where the payload runs (20000h-2FFFFh) and was "
                        "overwritten before it could be read")
        out["readable"] = False
        return out
    out["readable"] = True
    loader = _num(head, "loader")
    out["type_of_loader"] = loader
    out["loader"] = LOADERS.get(loader >> 4, f"type {loader >> 4:X}h")
    version = _num(head, "version")
    out["protocol"] = f"{version >> 8}.{version & 0xFF:02d}"
    out["e820_entries"] = n820 = _num(head, "e820")
    out["e820"] = [{"base": _wide(f, "base", "base_hi"), "length": _wide(f, "len", "len_hi"),
                    "type": _num(f, "type"),
                    "type_name": dec.E820_TYPES.get(_num(f, "type"), f"type {_num(f, 'type')}")}
                   for f in by["bpe820"]]
    if n820 > E820_MAX:
        problems.append(f"e820_entries is {n820}, past the table's {E820_MAX} entries: the "
                        f"first {E820_MAX} were read")
    if len(out["e820"]) != min(n820, E820_MAX):
        problems.append(f"{len(out['e820'])} of the page's {min(n820, E820_MAX)} E820 entries "
                        "arrived intact: the map is incomplete")
    ext = [{"base": _wide(f, "base", "base_hi"), "length": _wide(f, "len", "len_hi"),
            "type": _num(f, "type"),
            "type_name": dec.E820_TYPES.get(_num(f, "type"), f"type {_num(f, 'type')}")}
           for f in by["bpe820ext"]]
    out["e820_ext_entries"] = len(ext)  # from SETUP_E820_EXT setup_data, after the table's
    out["e820"] += ext
    out["ext_mem_k"] = _num(head, "ext_mem_k")
    out["alt_mem_k"] = _num(head, "alt_mem_k")
    out["acpi_rsdp_addr"] = _wide(head, "rsdp", "rsdp_hi")
    scr = by["bpscreen"][0] if by["bpscreen"] else {}
    out["screen_info"] = {k: _num(scr, key) for k, key in (
        ("orig_video_mode", "mode"), ("orig_video_cols", "cols"), ("orig_video_lines", "lines"),
        ("orig_video_isVGA", "isvga"), ("orig_video_points", "points"),
        ("orig_video_page", "page"), ("orig_x", "x"), ("orig_y", "y"), ("lfb_base", "lfb"),
        ("lfb_size", "lfb_size"), ("lfb_width", "width"), ("lfb_height", "height"),
        ("lfb_depth", "depth"), ("lfb_linelength", "linelength"),
        ("ext_lfb_base", "ext_lfb"))} if scr else None
    apm = by["bpapm"][0] if by["bpapm"] else None
    out["apm_bios_info"] = {k: _num(apm, k) for k in (
        "version", "cseg", "offset", "cseg_16", "dseg", "flags", "cseg_len", "cseg_16_len",
        "dseg_len")} if apm else None
    out["eddbuf_entries"] = ne = _num(head, "edd")
    if ne > EDD_MAX:
        problems.append(f"eddbuf_entries is {ne}, past the table's {EDD_MAX}: the first "
                        f"{EDD_MAX} were read")
    out["edd"] = [{"device": f"{_num(f, 'device'):02X}", "version": _num(f, "version"),
                   "interface_support": _num(f, "support"),
                   "legacy_cylinders": _num(f, "cyl"), "legacy_heads": _num(f, "heads"),
                   "legacy_sectors_per_track": _num(f, "spt"),
                   "params_length": _num(f, "plen"), "info_flags": _num(f, "pflags"),
                   "cylinders": _num(f, "pcyl"), "heads": _num(f, "pheads"),
                   "sectors_per_track": _num(f, "pspt"),
                   "sectors": _wide(f, "sectors", "sectors_hi"),
                   "bytes_per_sector": _num(f, "bps")} for f in by["bpedd"]]
    out["edd_mbr_sig_buf_entries"] = nm = _num(head, "mbr")
    if nm > MBR_MAX:
        problems.append(f"edd_mbr_sig_buf_entries is {nm}, past the buffer's {MBR_MAX}")
    out["edd_mbr_sig_buffer"] = [f"{_num(f, 'sig'):08X}" for f in by["bpmbr"]]
    chain = []
    for f in by["bpsetup"]:
        link = {"addr": _wide(f, "addr", "addr_hi")}
        if f.get("unreachable"):
            problems.append(f"setup_data link {len(chain)} at {link['addr']:#x} lies above "
                            "4 GiB: the chain was not followed further")
            chain.append(link)
            break
        if f.get("more"):
            problems.append(f"the setup_data chain goes on past {SETUP_MAX} links (a loop, "
                            "or a chain no loader makes): not followed further")
            break
        t = _num(f, "type")
        link.update(type=t, type_name=SETUP_TYPES.get(t, f"type {t:#x}"), len=_num(f, "len"))
        chain.append(link)
        if t == 1 and (link["len"] % 20 or link["len"] // 20 > E820EXT_MAX):
            problems.append(f"SETUP_E820_EXT link {len(chain) - 1} is {link['len']} bytes: not "
                            f"a whole number of 20-byte entries, or more than {E820EXT_MAX}")
    want_ext = sum(min(c.get("len", 0) // 20, E820EXT_MAX) for c in chain if c.get("type") == 1)
    if want_ext != len(ext):
        problems.append(f"{len(ext)} of the {want_ext} SETUP_E820_EXT entries arrived intact: "
                        "the map is incomplete")
    addrs = [c["addr"] for c in chain]
    if len(set(addrs)) != len(addrs):
        problems.append("the setup_data chain visits one address twice: a loop")
    out["setup_data"] = chain
    out["cmdline_ptr"] = _wide(head, "cmdline", "cmdline_hi")
    out["cmdline"] = _cmdline(by["bpcmdline"], problems)
    return out


def _apm_version(v: int) -> str:
    """apm_bios_info.version (BCD-like major.minor in a word) as the decoder writes it."""
    return f"{v >> 8}.{v & 0xFF}" if v else "none"


def _cmdline(lines: list[dict], problems: list[str]) -> str | None:
    """The command line from its lines: each 16 bytes at its `at`, four bytes a field (a field
    not 8 hex digits is damaged evidence: the bytes it held are lost)."""
    if not lines:
        return None
    length = min(_num(lines[0], "len"), 256)
    raw = bytearray(length)
    have = bytearray(length)
    for f in lines:
        at = _num(f, "at")
        for j, k in enumerate(("b0", "b1", "b2", "b3")):
            v = f.get(k)
            v = _num(f, k, None) if isinstance(v, str) and len(v) == 8 else None
            if v is not None:
                for i, b in enumerate(v.to_bytes(4, "big")):
                    pos = at + 4 * j + i
                    if pos < length:
                        raw[pos], have[pos] = b, 1
    if not all(have):
        problems.append(f"{have.count(0)} of the command line's first {length} bytes did not "
                        "arrive intact")
    return raw.decode("ascii", "replace")


# -- against the firmware ------------------------------------------------------------------------


def _intervals(entries) -> list[tuple[int, int, int]]:
    """(start, end inclusive, type), merged, from E820 entries; where two overlap, the later
    entry's type wins over the earlier one's for the overlap (as the page lists them)."""
    return _merged([(e["base"], e["base"] + e["length"] - 1, e["type"]) for e in entries
                    if e["length"]])


def _type_at(ivs, addr: int):
    for s, e, t in ivs:
        if s <= addr <= e:
            return t
    return None


def _pieces(a, b):
    """The address pieces where map a and map b say different things: (start, end, ta, tb)."""
    cuts = sorted({s for s, _, _ in a + b} | {e + 1 for _, e, _ in a + b})
    out = []
    for lo, hi in zip(cuts, cuts[1:]):
        ta, tb = _type_at(a, lo), _type_at(b, lo)
        if ta != tb:
            if out and out[-1][1] + 1 == lo and out[-1][2:] == (ta, tb):
                out[-1] = (out[-1][0], hi - 1, ta, tb)
            else:
                out.append((lo, hi - 1, ta, tb))
    return out


def _tname(t) -> str:
    return "absent" if t is None else dec.E820_TYPES.get(t, f"type {t}")


def _e820_class(kernel_t, firmware_t) -> tuple[str, str]:
    if firmware_t == RAM and kernel_t in KERNEL_RESERVED:
        return "expected", "RAM the previous kernel reserved for itself (not given away)"
    if firmware_t is None and kernel_t in KERNEL_RESERVED:
        return "expected", "a range the previous kernel added as reserved where the firmware " \
                           "lists nothing"
    if firmware_t is not None and kernel_t is None:
        return "wrong", "a firmware range the page lost"
    if kernel_t == RAM:
        return "wrong", f"the firmware's {_tname(firmware_t)} handed over as usable RAM"
    return "wrong", f"the firmware's {_tname(firmware_t)} changed to {_tname(kernel_t)}"


def _derived_mem_k(e820: list[dict]) -> tuple[int | None, int | None]:
    """ext_mem_k and alt_mem_k as a loader derives them from an E820 map: KiB of the RAM range
    that holds 1 MiB, above 1 MiB (ext capped at 0FC00h, 63 MiB), from the range's last byte
    (kexec_file_load) -- a loader counting from the byte after it lands 1 KiB higher, which
    `_derived_matches` takes too."""
    for e in e820:
        last = e["base"] + e["length"] - 1
        if e["type"] == RAM and e["base"] <= 0x100000 <= last:
            k = (last >> 10) - 1024
            return min(k, 0xFC00), min(k, 0xFFFFFFFF)
    return None, None


def _derived_matches(value: int, derived: int | None, cap: int) -> bool:
    return derived is not None and (value == derived or value == min(derived + 1, cap))


class _Answers:
    """What the BIOS answered this run, by step id: a step's result where it answered ok (else
    None), and whether its E820 walk ended (ok or error), for fields() and compare() alike."""

    def __init__(self, steps):
        self.by_id = {s["id"]: s for s in steps}
        self.e820_done = self.by_id.get("e820", {}).get("status") in ("ok", "error")

    def __call__(self, sid):
        s = self.by_id.get(sid)
        return (s.get("result") or {}) if s and s.get("status") == "ok" else None


def fields(page: dict, e820: list[dict], steps) -> list[dict]:
    """Field by field, what the page says against what the BIOS answered in this run (None
    where the run has no answer): the rows summary.md's "Hand-off vs firmware" shows."""
    if not page.get("readable"):
        return []
    answer = _Answers(steps)

    def same_map(a, b):
        return _intervals(a) == _intervals(b)

    e820_done = answer.e820_done
    rows = [{"field": "e820", "kernel": f"{len(page['e820'])} entries",
             "firmware": f"{len(e820)} entries (int 15h E820)" if e820 and e820_done else None,
             "same": same_map(page["e820"], e820) if e820 and e820_done else None}]
    for field, sid, key, call in (("ext_mem_k", "mem88", "kib_above_1m", "int 15h AH=88h"),
                                  ("alt_mem_k", "e801", "total_kib", "int 15h AX=E801h")):
        got = (answer(sid) or {}).get(key)
        rows.append({"field": field, "kernel": f"{page[field]} KiB",
                     "firmware": None if got is None else f"{got} KiB ({call})",
                     "same": None if got is None else got == page[field]})
    bios = (answer("edd-params") or {}).get("drives") or {}
    drives = sorted({d["device"] for d in page["edd"]} | {k.upper() for k in bios})
    for drive in drives:
        mine = next((d for d in page["edd"] if d["device"] == drive), None)
        got = bios.get(drive) or bios.get(drive.lower())
        got = got if isinstance(got, dict) and got.get("sectors") is not None else None
        rows.append({"field": f"edd drive {drive}",
                     "kernel": f"{mine['sectors']} sectors of {mine['bytes_per_sector']}"
                     if mine else "absent",
                     "firmware": f"{got['sectors']} sectors of {got.get('bytes_per_sector')} "
                                 "(int 13h AH=48h)" if got else None,
                     "same": None if not got else bool(
                         mine and mine["sectors"] == got["sectors"]
                         and mine["bytes_per_sector"] == got.get("bytes_per_sector"))})
    mode, scr = answer("video-mode"), page.get("screen_info")
    if scr is not None:
        rows.append({"field": "video mode",
                     "kernel": f"mode {scr['orig_video_mode']:02X}h, {scr['orig_video_cols']} "
                               "columns",
                     "firmware": f"mode {mode.get('mode', 0):02X}h, {mode.get('columns')} "
                                 "columns (int 10h AH=0Fh)" if mode else None,
                     "same": None if not mode else (scr["orig_video_mode"], scr[
                         "orig_video_cols"]) == (mode.get("mode"), mode.get("columns"))})
    apm, bios_apm = page.get("apm_bios_info"), answer("apm-check")
    if apm is not None:
        rows.append({"field": "APM", "kernel": _apm_version(apm["version"]),
                     "firmware": f"{bios_apm['version']} (int 15h AX=5300h)" if bios_apm
                     else None,
                     "same": None if not bios_apm else
                     _apm_version(apm["version"]) == bios_apm.get("version")})
    rows.append({"field": "acpi_rsdp_addr", "kernel": f"{page['acpi_rsdp_addr']:#x}",
                 "firmware": None, "same": None})
    rows.append({"field": "setup_data", "kernel": ", ".join(
        f"{c.get('type_name', '?')} at {c['addr']:#x}" for c in page["setup_data"]) or "none",
        "firmware": None, "same": None})
    rows.append({"field": "command line", "kernel": repr(page["cmdline"] or ""),
                 "firmware": None, "same": None})
    return rows


def compare(page: dict, e820: list[dict], steps) -> list[dict]:
    """Every difference between the page and the BIOS's answers in this run, classed."""
    if not page.get("readable"):
        return []
    answer = _Answers(steps)

    diffs: list[dict] = []

    def add(field, kernel, firmware, cls, why):
        diffs.append({"field": field, "kernel": kernel, "firmware": firmware, "class": cls,
                      "why": why})

    e820_done = answer.e820_done
    if e820 and e820_done and not page["e820"] and not page["e820_entries"]:
        add("e820", "0 entries", f"{len(e820)} entries", "wrong",
            "the page hands over no E820 map")
    if e820 and e820_done and page["e820"] and not any("E820" in p for p in page["problems"]):
        for lo, hi, kt, ft in _pieces(_intervals(page["e820"]), _intervals(e820)):
            cls, why = _e820_class(kt, ft)
            add("e820", f"{lo:016X}-{hi:016X} {_tname(kt)}", f"{lo:016X}-{hi:016X} "
                f"{_tname(ft)}", cls, why)
    ext, alt = _derived_mem_k(e820) if e820 and e820_done else (None, None)
    for field, sid, key, value, derived, cap in (
            ("ext_mem_k", "mem88", "kib_above_1m", page["ext_mem_k"], ext, 0xFC00),
            ("alt_mem_k", "e801", "total_kib", page["alt_mem_k"], alt, 0xFFFFFFFF)):
        got = (answer(sid) or {}).get(key)
        if got is None or got == value:
            continue
        if _derived_matches(value, derived, cap):
            add(field, value, got, "expected", "computed from the E820 map, not from "
                f"int 15h ({sid}): it matches the firmware's own E820 map")
        else:
            add(field, value, got, "wrong", f"matches neither int 15h ({sid}) nor the "
                "firmware's E820 map")
    _edd(page, answer, add)
    mode = answer("video-mode")
    scr = page.get("screen_info")
    if mode and scr is not None:
        for field, kv, fv in (("screen_info.orig_video_mode", scr["orig_video_mode"],
                               mode.get("mode")),
                              ("screen_info.orig_video_cols", scr["orig_video_cols"],
                               mode.get("columns"))):
            if fv is not None and kv != fv:
                add(field, kv, fv, "wrong", "not the mode int 10h AH=0Fh reports")
    apm, bios_apm = page.get("apm_bios_info"), answer("apm-check")
    if apm is not None and bios_apm and bios_apm.get("version") and \
            _apm_version(apm["version"]) != bios_apm["version"]:
        if not apm["version"]:
            add("apm_bios_info.version", 0, bios_apm["version"], "expected",
                "the loader hands over no APM information: a kernel's real-mode setup asks "
                "the BIOS for it, and a 64-bit kernel uses no APM")
        else:
            add("apm_bios_info.version", _apm_version(apm["version"]), bios_apm["version"],
                "wrong", "not the version int 15h AX=5300h reports")
    if page.get("door") == "real-mode":  # what the page leaves empty, setup collects
        for d in diffs:
            if d["kernel"] in (0, None, "0 entries"):
                d["class"], d["why"] = "expected", REAL_MODE_WHY
    return diffs


def _edd(page: dict, answer, add) -> None:
    bios = (answer("edd-params") or {}).get("drives") or {}
    passed = {d["device"]: d for d in page["edd"]}
    for drive, got in sorted(bios.items()):
        if not isinstance(got, dict) or got.get("sectors") is None:
            continue
        mine = passed.get(drive.upper())
        if mine is None:
            add(f"edd[{drive}]", None, f"{got['sectors']} sectors", "wrong",
                "a drive the BIOS answers for is missing from eddbuf")
            continue
        for key in ("sectors", "bytes_per_sector"):
            if got.get(key) is not None and mine[key] != got[key]:
                add(f"edd[{drive}].{key}", mine[key], got[key], "wrong",
                    "not what int 13h AH=48h reports for the drive")
    for drive, mine in sorted(passed.items()):
        if mine["device"] == "00" and not mine["sectors"]:
            continue  # an empty slot past the drives
        if bios and drive not in {d.upper() for d in bios}:
            add(f"edd[{drive}]", f"{mine['sectors']} sectors", None, "wrong",
                "a drive in eddbuf the BIOS does not answer for")


def handoff_params(records, e820: list[dict], steps) -> dict | None:
    """report.json's `handoff_params`: the decoded page and its `differences`."""
    page = decode(records)
    if page is None:
        return None
    page["fields"] = fields(page, e820, steps)
    page["differences"] = compare(page, e820, steps)
    return page
