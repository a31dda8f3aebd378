"""`kexectest build` and `kexectest inspect`, plus the payload configuration options that
`load`, `lab run` and sweeps share (one decorator, one translation to `payload.patch`)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .. import payload as pl
from ..errors import Exit, KexectestError
from ..payload import bootimage, bzimage
from ..payload.options import BY_NAME, OPTIONS, Option, config_kwargs, parse_number


class _IntParam(click.ParamType):
    """An integer written in decimal or with a 0x prefix (or as plain hex ending in 'h')."""

    name = "INT"

    def convert(self, value, param, ctx):
        try:
            return parse_number(value)
        except ValueError:
            self.fail(f"{value!r} is not a number (e.g. 0x3f8 or 1016)", param, ctx)


INT = _IntParam()
FORMATS = ("elf", "bzimage")

# click's side of each kind of payload option (the options themselves: payload/options.py)
_KIND_PARAMS = {
    "int": dict(type=int),
    "port": dict(type=INT),
    "step": dict(metavar="STEP"),
    "steps": dict(multiple=True, metavar="STEP"),
    "switch": {},
}


def _click_option(o: Option):
    decl = f"{o.cli}/--no-{o.cli[2:]}" if o.kind == "switch" else o.cli
    return click.option(decl, o.name, default=None, **_KIND_PARAMS[o.kind], help=o.help_line)


_CONFIG_PARAMS = [_click_option(o) for o in OPTIONS]


def config_options(func):
    """Decorator adding every payload configuration option to a click command."""
    for opt in reversed(_CONFIG_PARAMS):
        func = opt(func)
    return func


def config_options_without(*names):
    """The same, but for the named options (a command whose own option has that name)."""
    def decorate(func):
        for o, opt in reversed(list(zip(OPTIONS, _CONFIG_PARAMS))):
            if o.name not in names:
                func = opt(func)
        return func
    return decorate


@click.command("build")
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Where to write the ELF (default build/kexec_test.elf); with "
                                 "--image, the image (default build/kexec_test.img or .iso).")
@click.option("--image", "image", type=click.Choice(bootimage.KINDS), default=None,
              help="Also make a bootable image of the payload for the machine's own firmware: "
                   "disk (a raw disk for a USB stick, dd or a lab disk) or iso (El Torito, for "
                   "a BMC's virtual media or a CD).  The payload options below configure the "
                   "payload inside it.")
@click.option("--format", "formats", type=click.Choice(FORMATS), multiple=True,
              help="What to write: elf (build/kexec_test.elf, for kexec_load and kexec-tools' "
                   "elf-x86), bzimage (build/kexec_test.bzImage, for kexec_file_load and "
                   "Linux boot loaders), or both (the default).  With both, -o names the ELF "
                   "and the bzImage goes beside it with the suffix .bzImage.")
@config_options
def build_cmd(out, image, formats, **config):
    """Assemble and link the real-mode test payload with binutils (and make a boot image)."""
    chosen = {k: v for k, v in config.items() if v not in (None, ())}
    if chosen and image is None:
        names = ", ".join(BY_NAME[k].cli for k in sorted(chosen))
        raise KexectestError(f"{names}: payload options configure a boot image: add --image "
                             "disk|iso (kexectest load takes them for a kexec)", Exit.USAGE)
    formats = set(formats or FORMATS)
    only_bz = formats == {"bzimage"} and image is None
    path = pl.build(None if image or only_bz else out)
    img = pl.PayloadImage.open(path)
    if "elf" in formats or image:
        click.echo(f"{path}  {len(img.data)} bytes  build-id {img.build_id or '-'}")
    for level, msg in img.checks():
        if level == "warning":
            click.echo(f"warning: {msg}", err=True)
    if "bzimage" in formats and image is None:
        bz_out = out if only_bz else (path.with_suffix(".bzImage") if out else None)
        bz = pl.write_bzimage(path, bz_out)
        data = bz.read_bytes()
        head = bzimage.read_header(data)
        click.echo(f"{bz}  {len(data)} bytes  bzImage, boot protocol {head['version'] >> 8}."
                   f"{head['version'] & 0xFF:02d}, build-id {img.build_id or '-'}")
    if image is None:
        return
    import tempfile

    with tempfile.TemporaryDirectory(prefix="kt-image-") as tmp:
        src = pl.patch(path, Path(tmp) / "payload.elf", **config_kwargs(config)) if chosen else path
        written = bootimage.write_image(src, image, out)
    size = written.stat().st_size
    what = "disk image (dd it to a USB stick)" if image == "disk" else "ISO (El Torito)"
    click.echo(f"{written}  {size} bytes  {what}, payload {len(bootimage.load_segment(img))} "
               f"bytes, entered in real mode at kt_entry16")


def _hex(v: int | None, width: int = 0) -> str:
    return "-" if v is None else f"0x{v:0{width}x}"


def _render(img: pl.PayloadImage, console) -> None:
    from rich.table import (
        Table,  # imported here: `load` on a slow target need not pay for it
    )

    console.print(f"[bold]{img.path}[/]  version {img.version or '-'}")
    console.print(f"build id {img.build_id or '-'}")
    console.print(f"sha256   {img.sha256}")
    console.print(f"entry32  {_hex(img.entry32)}   entry64 {_hex(img.entry64)}   "
                  f"KT_BASE {_hex(img.kt_base)}")

    seg = Table(title="load segments")
    for col in ("paddr", "vaddr", "offset", "filesz", "memsz", "flags"):
        seg.add_column(col, justify="right")
    for s in img.segments:
        flags = "".join(c if s.flags & b else "-" for c, b in (("R", 4), ("W", 2), ("X", 1)))
        seg.add_row(_hex(s.paddr), _hex(s.vaddr), _hex(s.offset), str(s.filesz), str(s.memsz),
                    flags)
    console.print(seg)

    cfg = Table(title="config block (kt_config)")
    cfg.add_column("field")
    cfg.add_column("value")
    for key, val in img.config.to_dict().items():
        if isinstance(val, bool) or val is None or isinstance(val, (str, list)):
            shown = str(val) if not isinstance(val, list) else (", ".join(map(str, val)) or "-")
        elif key in ("uart_base", "flags", "debug_exit_port", "pic_mask_master",
                     "pic_mask_slave"):
            shown = _hex(val)
        else:
            shown = str(val)
        if key in ("hang_step", "reset_step") and val is not None:
            shown = f"{val:03d} {img.step_name(val) or '?'}"
        cfg.add_row(key, shown)
    console.print(cfg)

    st = Table(title=f"steps ({len(img.steps)})")
    for col in ("#", "id", "int", "function", "flags", "eax", "ebx", "ecx", "edx", "handler",
                "title"):
        st.add_column(col, justify="left" if col in ("id", "function", "title") else "right")
    for s in img.steps:
        title = "-" if s.title is None else s.title + (" (optional)" if s.optional else "")
        st.add_row(f"{s.index:03d}", s.name, f"{s.int:02X}h" if s.int else "-",
                   s.function or "-", f"{s.flags:04x}", f"{s.eax:08x}", f"{s.ebx:08x}",
                   f"{s.ecx:08x}", f"{s.edx:08x}", _hex(s.handler) if s.handler else "-", title)
    console.print(st)

    style = {"ok": "green", "warning": "yellow", "error": "bold red"}
    for level, msg in img.checks():
        console.print(f"[{style[level]}]{level:7}[/] {msg}")


@click.command("inspect")
@click.argument("payload", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON (integers as numbers).")
def inspect_cmd(payload, as_json):
    """Show a payload ELF (entry points, load segments, config block, steps, build id, checks)
    or a bzImage (its setup header, checked against the boot protocol's rules)."""
    try:
        head = payload.read_bytes()[:0x400] if payload.is_file() else b""
    except OSError:
        head = b""
    if bzimage.is_bzimage(head):
        return _inspect_bzimage(payload, as_json)
    img = pl.PayloadImage.open(payload)
    if as_json:
        click.echo(json.dumps(img.to_dict(), indent=2))
    else:
        from rich.console import Console

        _render(img, Console())
    errors = [m for lvl, m in img.checks() if lvl == "error"]
    if errors:  # a payload that would not survive the hand-off: say so in the exit status too
        raise KexectestError(f"{payload}: {errors[0]}", Exit.PAYLOAD_LIMITS)


def _inspect_bzimage(path: Path, as_json: bool) -> None:
    from ..fsutil import os_error

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise os_error(path, exc, "read") from None
    head = bzimage.read_header(data)
    checks = bzimage.header_checks(data)
    if as_json:
        doc = {"path": str(path), "format": "bzimage", "size": len(data),
               "header": {k: (v.decode("ascii", "replace") if isinstance(v, bytes) else v)
                          for k, v in head.items()},
               "xloadflags": bzimage.xloadflag_names(head["xloadflags"]),
               "checks": [{"level": lvl, "message": msg} for lvl, msg in checks]}
        click.echo(json.dumps(doc, indent=2))
    else:
        from rich.console import Console
        from rich.table import Table

        console = Console()
        setup, pm = bzimage.parts(data)
        console.print(f"[bold]{path}[/]  bzImage, {len(data)} bytes: setup {len(setup)}, "
                      f"protected-mode part {len(pm)}")
        table = Table(title="setup header")
        for col in ("offset", "field", "value"):
            table.add_column(col, justify="right" if col == "offset" else "left")
        for name, offset, _fmt in bzimage.FIELDS:
            value = head[name]
            shown = value.decode("ascii", "replace") if isinstance(value, bytes) else _hex(value)
            if name == "xloadflags":
                shown += " " + " ".join(bzimage.xloadflag_names(value))
            table.add_row(f"{offset:#05x}", name, shown)
        console.print(table)
        style = {"ok": "green", "warning": "yellow", "error": "bold red"}
        for level, msg in checks:
            console.print(f"[{style[level]}]{level:7}[/] {msg}")
    errors = [m for lvl, m in checks if lvl == "error"]
    if errors:
        raise KexectestError(f"{path}: {errors[0]}", Exit.PAYLOAD_LIMITS)


def register(group: click.Group) -> None:
    group.add_command(build_cmd)
    group.add_command(inspect_cmd)
