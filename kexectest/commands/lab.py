"""`kexectest lab build` and `kexectest lab run`: the virtual lab from the command line."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console

from ..errors import Exit, KexectestError
from ..lab.diskbus import BUSES
from ..lab.keyboard import KEYBOARDS
from ..lab.video import VIDEOS
from ..payload.options import CONFIG_OPTION_NAMES
from .payload import config_options
from .run import finish


@click.group("lab")
def lab_group():
    """The virtual lab: QEMU + SeaBIOS (or the Bochs BIOS) + a Debian kernel that kexecs into
    the payload."""


SUITE_HELP = ("The Debian kernel of this suite (bookworm, trixie, sid) or this exact "
              "linux-image-*-amd64 package, fetched through a private apt configuration in the "
              "lab cache (the host's sources are never changed) [default: the host apt's "
              "linux-image-amd64].")


@lab_group.command("build")
@click.option("--kernel", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Boot this bzImage instead of Debian's linux-image-*-amd64.")
@click.option("--modules", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Directory with the kernel's virtio/9p modules (.ko), for --kernel; default: "
                   "the Debian package's, when its release matches the kernel's.")
@click.option("--kernel-suite", "kernel_suite", default=None, metavar="SUITE|PACKAGE",
              help=SUITE_HELP)
@click.option("--force", is_flag=True, help="Rebuild even when the cache is up to date.")
def build_cmd(kernel, modules, kernel_suite, force):
    """Build the guest image (cached; rebuilt only when its inputs change) and print its path."""
    from ..lab.image import build_image

    image = build_image(kernel, modules, force=force, suite=kernel_suite,
                        log=lambda msg: click.echo(msg, err=True))
    click.echo(str(image.directory))


def _from_lab_file(path: Path, name: str) -> tuple[dict, dict, float | None, list[str], bool,
                                                   str | None]:
    """(machine shape, load options, timeout, guest modules, baseline, kernel suite) of machine
    NAME in a lab file."""
    from ..fleet.labfile import load_lab

    m = load_lab(path).machine(name)
    if m.qemu is None:
        raise KexectestError(f"{path}: machine {name!r} is not a virtual machine (no qemu table)",
                             Exit.CONFIG)
    shape = {k: getattr(m.qemu, k) for k in ("machine", "memory", "smp", "disks", "accel",
                                             "disk_bus", "firmware", "video", "keyboard")}
    return shape, dict(m.load), m.timeout, list(m.drivers), m.baseline, m.kernel_suite


@lab_group.command("run")
@click.option("--machine", type=click.Choice(["pc", "q35"]), default=None,
              help="QEMU machine type [default: pc].")
@click.option("--memory", type=click.IntRange(64, 1 << 20), default=None, metavar="MIB",
              help="Guest memory in MiB [default: 256].")
@click.option("--smp", type=click.IntRange(1, 64), default=None, help="CPUs [default: 1].")
@click.option("--disks", type=click.IntRange(0, 2), default=None,
              help="Lab disks with known content attached [default: 1].")
@click.option("--accel", type=click.Choice(["auto", "tcg", "kvm"]), default=None,
              help="auto = KVM only with real hardware virtualisation [default: auto].")
@click.option("--disk-bus", default=None, metavar="BUS",
              help=f"The bus the lab disks are on, booted by SeaBIOS as drives 80h..: "
                   f"{', '.join(BUSES)} [default: the machine's own, ide on pc, ahci on q35].")
@click.option("--video", default=None, metavar="MODEL",
              help=f"The video device (its VGA BIOS answers int 10h): {', '.join(VIDEOS)} "
                   "[default: the machine's own, std].")
@click.option("--keyboard", default=None, metavar="MODEL",
              help=f"The keyboard int 16h reads: {', '.join(KEYBOARDS)} (usb: a USB keyboard on "
                   "an xHCI controller) [default: ps2, the machine's own].")
@click.option("--driver", "drivers", multiple=True, metavar="MODULE",
              help="A guest kernel module to load before `kexectest load` (repeatable), with "
                   "its dependencies from the kernel package and what a working disk needs "
                   "after it (sd_mod behind ahci, usb-storage behind xhci_pci).")
@click.option("--kernel-suite", "kernel_suite", default=None, metavar="SUITE|PACKAGE",
              help="Boot the lab image of this Debian kernel (as `lab build --kernel-suite`; "
                   "built on first use) [default: the lab file's kernel_suite, else the "
                   "host apt's kernel].")
@click.option("--loader", type=click.Choice(["syscall", "kexec-tools", "file",
                                              "kexec-tools-bzimage", "real-mode", "direct"]),
              default=None,
              help="kexec_load syscall, kexec-tools (elf-x86), kexec_file_load (the payload as "
                   "a bzImage), kexec-tools' bzImage loader, its real-mode entry (--real-mode) "
                   "from the lab's Linux, or direct: the "
                   "firmware boots the payload without Linux (SeaBIOS by -kernel, the Bochs "
                   "BIOS from the payload's disk image) [default: syscall].")
@click.option("--firmware", type=click.Choice(["seabios", "bochs"]), default=None,
              help="QEMU's SeaBIOS, or Debian's Bochs BIOS (no local APIC, one CPU, Linux "
                   "from a CD: docs/firmware.md) [default: seabios].")
@click.option("--baseline", is_flag=True, default=None,
              help="Boot the same machine twice: the payload from its disk image at POST, "
                   "then Linux + kexec; one bundle with both captures (post/) and every step "
                   "that differs from POST (faults asked for apply to the kexec run only).")
@config_options
@click.option("--payload", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Payload ELF [default: the built payloads/kexec_test.S].")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("kexectest-runs"), show_default=True, help="Where bundles go.")
@click.option("--timeout", type=click.FloatRange(0.1), default=None,
              help="Seconds of serial silence before the run is called hung [default: 60].")
@click.option("--max-time", type=click.FloatRange(0.1), default=None,
              help="Longest the capture may take in all.")
@click.option("--config", "config", type=(click.Path(dir_okay=False, path_type=Path), str),
              default=None, metavar="FILE NAME",
              help="Take machine NAME from lab file FILE (options given here win).")
@click.option("--agent", type=click.Choice(["auto", "python", "shell", "9p"]), default="auto",
              show_default=True,
              help="How the payload gets into the guest: pushed with the target agent, as "
                   "`kexectest run --push` does on hardware (auto: the Python agent for the "
                   "syscall loader, in a guest given a Python; the shell agent for kexec-tools, "
                   "in the lab's minimal guest; 9p where the guest needs the host share: "
                   "--driver, Linux from a CD), or 9p: the host's kexectest over a 9p share.")
@click.option("--cold", is_flag=True,
              help="Boot Linux in full instead of restoring this machine shape's saved state "
                   "(the first run of a shape saves one; a line on stderr says which was done).")
@click.option("--quiet", is_flag=True, help="Only the verdict line and the bundle path.")
@click.option("--json", "json_output", is_flag=True, help="Print report.json on stdout.")
def run_cmd(machine, memory, smp, disks, accel, disk_bus, video, keyboard, drivers, kernel_suite, loader,
            firmware, baseline,
            payload, out_dir, timeout, max_time, config, agent, cold, quiet, json_output,
            **options):
    """Boot a virtual machine, kexec into the payload from its Linux exactly as on hardware
    (log in on the serial console, push the target agent and run it), collect and analyse
    the trace, and write the bundle.  Exit status: the verdict's code."""
    from ..lab.runner import run_virtual

    shape = {"machine": "pc", "memory": 256, "smp": 1, "disks": 1, "accel": "auto",
             "firmware": "seabios"}
    load: dict = {}
    file_timeout = None
    file_drivers: list[str] = []
    file_baseline = False
    file_suite = None
    if config is not None:
        (file_shape, load, file_timeout, file_drivers, file_baseline,
         file_suite) = _from_lab_file(*config)
        shape.update({k: v for k, v in file_shape.items() if v is not None})
    given = {"machine": machine, "memory": memory, "smp": smp, "disks": disks, "accel": accel,
             "disk_bus": disk_bus, "firmware": firmware, "video": video, "keyboard": keyboard}
    shape.update({k: v for k, v in given.items() if v is not None})
    via = loader or load.pop("via", None) or "syscall"
    load.pop("via", None)
    payload = payload or load.pop("payload", None)
    args = load.pop("args", ())
    cfg = {k: v for k, v in load.items() if k in CONFIG_OPTION_NAMES}
    unknown = set(load) - set(cfg)
    if unknown:
        raise KexectestError(f"lab run: load option(s) {', '.join(sorted(unknown))} are not "
                             "supported by the virtual lab", Exit.CONFIG)
    # options given here win over the lab file's, value by value (run_virtual reads them both)
    cfg.update({k: v for k, v in options.items()
                if k in CONFIG_OPTION_NAMES and v not in (None, ())})

    console = Console(stderr=json_output, highlight=False)
    result = run_virtual(
        shape, loader=via, out_dir=out_dir, timeout=timeout or file_timeout or 60.0,
        overall_timeout=max_time, console=console, payload=payload, args=list(args),
        quiet=quiet, json_output=json_output, command_line=["kexectest", *sys.argv[1:]],
        log=lambda msg: click.echo(msg, err=True), cold=cold, agent=agent,
        drivers=list(drivers) or file_drivers, kernel_suite=kernel_suite or file_suite,
        baseline=file_baseline if baseline is None else baseline, **cfg)
    if hasattr(result, "baseline"):
        _finish_baseline(result, json_output)
    finish(result, json_output)


def _finish_baseline(result, json_output: bool) -> None:
    """A baseline run's ending: report.json with its baseline, or the verdict line and the
    differences from POST; then the bundle and the kexec run's exit status."""
    import json

    from ..output.baseline_md import baseline_section

    if json_output:
        click.echo(json.dumps(result.report(), indent=2))
        click.echo(f"bundle: {result.tarball}", err=True)
    else:
        click.echo(result.analysis.one_line())
        for line in baseline_section(result.baseline)[2:]:  # under the verdict line
            click.echo(line)
        click.echo(f"bundle: {result.tarball}")
    sys.exit(result.exit_code)


def register(group: click.Group) -> None:
    group.add_command(lab_group)
