"""The payload options `kexectest load`, `kexectest lab run` and lab files share: their names,
and the translation between parsed options, `payload.patch` keyword arguments and the argv of
`kexectest load` on a target."""

from __future__ import annotations

CONFIG_OPTION_NAMES = ("uart_base", "baud", "skip", "hang_at", "reset_at", "int19", "vga_mirror",
                       "e9_mirror", "debug_exit", "debug_exit_port", "mask_nmi", "keep_uart",
                       "max_drives")


def config_kwargs(options: dict) -> dict:
    """The keyword arguments for `payload.patch` from a command's parsed options
    (pass the command's **kwargs; unrelated keys are ignored)."""
    kw = {k: options.get(k) for k in CONFIG_OPTION_NAMES}
    port = kw.pop("debug_exit_port")
    if port is not None and kw["debug_exit"] is not False:
        kw["debug_exit"] = port
    kw["skip"] = tuple(kw["skip"] or ())
    return kw


def config_argv(kwargs: dict) -> list[str]:
    """The inverse of `config_kwargs`: command-line words for `kexectest load` on a target."""
    argv: list[str] = []
    if kwargs.get("uart_base") is not None:
        argv += ["--uart-base", hex(kwargs["uart_base"])]
    if kwargs.get("baud") is not None:
        argv += ["--baud", str(kwargs["baud"])]
    for s in kwargs.get("skip") or ():
        argv += ["--skip", str(s)]
    for key in ("hang_at", "reset_at"):
        if kwargs.get(key) is not None:
            argv += ["--" + key.replace("_", "-"), str(kwargs[key])]
    for key in ("int19", "vga_mirror", "e9_mirror", "mask_nmi", "keep_uart", "debug_exit"):
        val = kwargs.get(key)
        if val is None:
            continue
        flag = key.replace("_", "-")
        if key == "debug_exit" and not isinstance(val, bool):
            argv += ["--debug-exit-port", hex(val)]
        else:
            argv.append(f"--{flag}" if val else f"--no-{flag}")
    if kwargs.get("max_drives") is not None:
        argv += ["--max-drives", str(kwargs["max_drives"])]
    return argv
