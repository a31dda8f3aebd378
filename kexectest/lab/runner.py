"""One virtual-lab run: build or reuse the guest, start QEMU, then the same session as hardware.

The runner only adds what a lab on a desk would: a machine to power on (QEMU, restored from its
shape's saved state when there is one: lab/warmstate.py) and its console address.  Logging in,
pushing the target agent and the payload and running them (`kexectest run --push`: the guest
needs nothing of kexectest), capturing, analysing and bundling are
`kexectest.session.run_session`, exactly as `kexectest run --serial URL --login root --push`.

The lab's guest is a minimal target, busybox and kexec-tools: the push gives it the shell agent.
The `syscall` loader needs the Python agent, so those runs boot the guest with a Python
(lab/guest_python.py).  `agent="9p"` is the way before the push: the host's own kexectest over
a 9p share, typed as `kexectest load ... --exec --yes`.
Guest kernel modules a run asks for (lab/drivers.py) are loaded on the same command line,
before the agent: after the login, so after a warm start's restore.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

from .. import payload as pl
from ..errors import Exit, KexectestError
from ..payload.options import CONFIG_OPTION_NAMES, config_argv, config_kwargs, lab_values
from ..payload import bootimage
from . import diskbus, warmstate
from . import drivers as guest_drivers
from . import firmware as fw
from . import guest_python
from . import image as lab_image
from .linuxcd import linux_cd
from .qemu import Qemu
from .shape import Shape

LOADERS = ("syscall", "kexec-tools", "file", "kexec-tools-bzimage", "real-mode", "direct")
# how the payload gets into the guest: pushed (the agent the loader needs: "auto"; or the Python
# or shell agent by name), or the host's kexectest over 9p
AGENTS = ("auto", "python", "shell", "9p")
BOOT_BUDGET_S = 180.0  # QEMU start -> login -> `kexectest load` under TCG, with a wide margin
GUEST_HIDDEN = ("proc", "sys", "dev", "run")  # the guest mounts its own over the host's
CONFIG_KEYS = CONFIG_OPTION_NAMES  # the payload options (payload/options.py), as keywords


def guest_command(payload: Path, loader: str, config: dict, args: list[str] = ()) -> str:
    """The shell line typed on the guest's console: what a user types on real hardware."""
    via, door = (("kexec-tools-bzimage", ["--real-mode"]) if loader == "real-mode"
                 else (loader, []))
    argv = ["kexectest", "load", str(payload), "--via", via, *door, "--exec", "--yes"]
    argv += config_argv(config) + list(args)
    return shlex.join(argv)


def _split_config(kwargs: dict) -> dict:
    unknown = set(kwargs) - set(CONFIG_KEYS)
    if unknown:
        raise KexectestError(f"lab: unknown load option(s) {', '.join(sorted(unknown))}",
                             Exit.CONFIG)
    return config_kwargs(lab_values(kwargs))


_MODULE_FAILED = re.compile(re.escape(guest_drivers.MARK)
                            + r" (module \S+ failed to load in the guest: .*?)(?: \| |$)")


def _drivers_script(img: lab_image.LabImage, shape: Shape, drivers: list[str], log):
    """The plan and the guest script of the modules a run asks for (exit 19 for a module the
    lab's kernel does not have)."""
    index = guest_drivers.module_index(guest_drivers.module_source(img), log)
    if img.kernel_version and index.release != img.kernel_version:
        raise KexectestError(f"lab: the modules found are release {index.release}, the lab's "
                             f"kernel is {img.kernel_version}", Exit.LAB_BUILD)
    plan = guest_drivers.plan(index, drivers, diskbus.bus_of(shape.machine, shape.disk_bus).chain,
                              shape.disks, set(lab_image.MODULES))
    script = guest_drivers.prepare(index, plan)
    if script.parts[1:2] and script.parts[1] in GUEST_HIDDEN:
        raise KexectestError(f"lab: the lab cache {script.parent} is under /{script.parts[1]}, "
                             "which the guest has its own of: set KEXECTEST_CACHE elsewhere",
                             Exit.BAD_INPUT)
    log(f"guest modules: {' '.join(plan.order)}")
    return plan, script


def _stage_error(exc: KexectestError) -> KexectestError:
    """A module that failed to load in the guest, as the lab stage that failed (its name and
    the guest's message); any other failure as it was."""
    text = str(exc)
    m = _MODULE_FAILED.search(text)
    if m is None:
        return exc
    bundle = text[text.rfind(" (bundle: "):] if " (bundle: " in text else ""
    return KexectestError(f"lab: {m[1]}{bundle}", Exit.LAB_STAGE)


def _keep_qemu_stderr(q: Qemu, out_dir: Path, bundle_dir: Path | None) -> None:
    """Put QEMU's stderr into the run's bundle directory (the newest one when unknown)."""
    if not q.stderr_path or not q.stderr_path.exists():
        return
    if bundle_dir is None:
        runs = sorted((p for p in out_dir.glob("run-*") if p.is_dir()),
                      key=lambda p: p.stat().st_mtime)
        bundle_dir = runs[-1] if runs else None
    if bundle_dir is not None and not (bundle_dir / "qemu.stderr").exists():
        shutil.copyfile(q.stderr_path, bundle_dir / "qemu.stderr")


def _lab_disks(img: lab_image.LabImage | None, shape: Shape) -> list[Path]:
    return list(img.disks[:shape.disks]) if img is not None and shape.disks else []


def resolve_agent(agent: str, loader: str, drivers, firm: fw.Firmware) -> str:
    """The way into the guest that `agent` (AGENTS) comes to for this run: "auto" pushes, but
    takes the host share where the guest needs it anyway -- the kernel's modules (read from the
    lab cache) and Linux booted from a CD (the pushed agents' guests are booted by -kernel)."""
    needs_share = [why for why, yes in (("guest drivers", bool(drivers)),
                                        (f"Linux from a CD under {firm.name}",
                                         not firm.kernel_boot)) if yes]
    if agent == "auto":
        return "9p" if needs_share else "shell" if loader in ("kexec-tools", "direct") else "python"
    if needs_share and agent in ("python", "shell") and loader != "direct":
        raise KexectestError(f"lab: {' and '.join(needs_share)} come over the host share: "
                             "--agent 9p (or auto)", Exit.CONFIG)
    return agent


def run_virtual(machine: Any = "pc", *, loader: str = "syscall", out_dir: Path | str = "out",
                timeout: float = 60.0, console=None, memory: int | None = None,
                memory_mib: int | None = None, smp: int | None = None, disks: int | None = None,
                accel: str | None = None, firmware: str | None = None, baseline: bool = False,
                payload: Path | str | None = None,
                args: list[str] | tuple = (), command_line: list[str] | None = None,
                quiet: bool = False, json_output: bool = False, redact: bool = False,
                overall_timeout: float | None = None, image: lab_image.LabImage | None = None,
                log=None, cold: bool = False, disk_bus: str | None = None,
                drivers: list[str] | tuple = (), boot_image: Path | None = None,
                post: bool = False, post_share: bool = True, agent: str = "auto",
                kernel_suite: str | None = None, video: str | None = None,
                keyboard: str | None = None, **config):
    """Run the payload on one virtual machine and return the session's SessionResult.

    `machine`: "pc"/"q35", a dict or an object with machine/memory/smp/disks/accel/firmware;
    keyword overrides win.  `loader`: syscall | kexec-tools (a real kexec from the lab's
    Linux) or direct (the firmware boots the payload: SeaBIOS with -kernel, the Bochs BIOS
    from the payload's disk image).  `firmware`: seabios | bochs (lab/firmware.py).
    `baseline`: POST first, then this run, one bundle (`run_baseline`).  `config`: payload
    options as payload/options.py's CONFIG_OPTION_NAMES (hang_at=..., uart_base=...).  `cold`:
    boot Linux in full instead of restoring the shape's saved state (lab/warmstate.py).
    `disk_bus`: the bus of the lab disks (lab/diskbus.py; default the machine's own);
    `drivers`: guest kernel modules loaded before `kexectest load`, with what they and the
    disks need (lab/drivers.py).  `boot_image`, `post` (run_baseline's): the payload's disk
    image as the first disk, and a POST run booting it with every device the Linux run has
    (`post_share`: the host share's virtio device too, as a Linux run that takes the 9p way).
    `agent`: AGENTS -- "auto" pushes the Python agent for `syscall` and the shell agent for
    `kexec-tools`, and is "9p" where the guest needs the host share (drivers, Linux from a CD).
    `kernel_suite`: the lab image of that Debian suite's kernel (bookworm, trixie, sid) or of
    that exact kernel package (lab/kernelsuite.py); None: the default image.
    `video`, `keyboard`: the machine's video model and keyboard (lab/video.py,
    lab/keyboard.py; default the machine's own: no video device, PS/2).
    """
    from ..capture.session import RunOptions, run_session

    if baseline:
        from .baseline import run_baseline  # it runs this function twice
        return run_baseline(machine, loader=loader, out_dir=out_dir, timeout=timeout,
                            console=console, memory=memory or memory_mib, smp=smp, disks=disks,
                            accel=accel, firmware=firmware, payload=payload, args=args,
                            command_line=command_line, quiet=quiet, json_output=json_output,
                            redact=redact, overall_timeout=overall_timeout, image=image,
                            log=log, disk_bus=disk_bus, drivers=drivers, agent=agent,
                            kernel_suite=kernel_suite, video=video, keyboard=keyboard,
                            **config)
    if loader not in LOADERS:
        raise KexectestError(f"lab: loader must be one of {', '.join(LOADERS)}, not {loader!r}",
                             Exit.CONFIG)
    if agent not in AGENTS:
        raise KexectestError(f"lab: agent must be one of {', '.join(AGENTS)}, not {agent!r}",
                             Exit.CONFIG)
    shape = Shape.of(machine, memory=memory or memory_mib, smp=smp, disks=disks, accel=accel,
                     disk_bus=disk_bus, firmware=firmware, video=video, keyboard=keyboard)
    drivers, plan = list(drivers or ()), None
    if drivers and loader == "direct":
        raise KexectestError("lab: drivers are loaded by the lab's Linux, and the direct loader "
                             "boots the payload without it", Exit.CONFIG)
    firm = fw.get(shape.firmware)
    agent = resolve_agent(agent, loader, drivers, firm)
    if agent == "shell" and loader not in ("kexec-tools", "direct"):
        raise KexectestError("lab: the shell agent loads through kexec-tools only: "
                             "--loader kexec-tools, or --agent python", Exit.CONFIG)
    if loader != "direct" and shape.machine not in firm.linux_machines:
        raise KexectestError(f"lab: Linux + kexec under firmware {firm.name} runs on "
                             f"{', '.join(firm.linux_machines)} only, not {shape.machine} "
                             "(docs/firmware.md); --loader direct boots the payload there",
                             Exit.CONFIG)
    cfg = _split_config(config)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log = log or (lambda msg: None)

    elf = Path(payload).resolve() if payload else pl.ensure_built()
    if not elf.is_file():
        raise KexectestError(f"lab: payload {elf} does not exist", Exit.BAD_INPUT)
    if loader != "direct" and elf.parts[1:2] and elf.parts[1] in GUEST_HIDDEN:
        raise KexectestError(f"lab: payload {elf} is under /{elf.parts[1]}, which the guest "
                             "has its own of: put it elsewhere", Exit.BAD_INPUT)
    time_limit = (overall_timeout or timeout) + BOOT_BUDGET_S
    # no_reboot=False: a triple fault reboots the machine and the banner coming back tells
    # the collector it was a reset (the time limit still bounds a reboot loop)
    common = dict(machine=shape.machine, memory_mib=shape.memory, smp=shape.smp,
                  accel=shape.accel, time_limit=time_limit, out_dir=out_dir, no_reboot=False,
                  disk_bus=shape.disk_bus, firmware=shape.firmware, video=shape.video,
                  keyboard=shape.keyboard)
    session = dict(timeout=timeout, overall_timeout=overall_timeout, out_dir=out_dir,
                   quiet=quiet, json_output=json_output, redact=redact,
                   command_line=command_line or [sys.argv[0], "lab", "run"])
    # the Linux CD for firmware that runs no -kernel; a POST run attaches it too (same shape)
    needs_cd = not firm.kernel_boot and (loader != "direct" or post)

    if loader == "direct":
        # no Linux: the payload is patched on the host and leaves through isa-debug-exit
        cfg_direct = dict(cfg)
        if cfg_direct.get("debug_exit") is None:
            cfg_direct["debug_exit"] = True
        elf_run = pl.patch(elf, out_dir / "payload-direct.elf", **cfg_direct)
        img = ((image or lab_image.build_image(log=log, suite=kernel_suite))
               if shape.disks or post else None)
        if post or not firm.kernel_boot:  # the firmware boots the payload's disk image
            boot_image = bootimage.write_image(elf_run, "disk", out_dir / "payload-direct.img")
            q = Qemu(disks=[boot_image, *_lab_disks(img, shape)], boot="c",
                     share_host=post and post_share,
                     cdrom=linux_cd(img) if needs_cd else None, **common)
            boot = "the payload's disk image"
        else:
            q = Qemu(kernel=elf_run, disks=_lab_disks(img, shape), **common)
            boot = "-kernel (multiboot)"
        opts = RunOptions(serial_url="", payload_elf=elf_run, **session)
    elif agent == "9p":
        img = image or lab_image.build_image(log=log, suite=kernel_suite)
        lab_image.compile_tree()  # the guest imports this tree's kexectest, read-only
        prefix = None
        if drivers:
            plan, script = _drivers_script(img, shape, drivers, log)
            prefix = f"sh {shlex.quote('/host' + str(script))} && "
        drives = [*([boot_image] if boot_image else []), *_lab_disks(img, shape)]
        if firm.kernel_boot:
            q = Qemu(kernel=img.kernel, initrd=img.initrd, append=img.cmdline, disks=drives,
                     share_host=True, **common)
            boot = "Linux by -kernel"
        else:
            q = Qemu(disks=drives, cdrom=linux_cd(img), boot="d", share_host=True, **common)
            boot = "Linux from its ISOLINUX CD"
        # the password goes to the session directly: never on a command line or in a file
        # the guest's own prompt: the generic one also matches a kernel line cut at "#"
        # (".... node  #0, CPUs:      #" + "1" in a later read) while the guest still boots
        opts = RunOptions(serial_url="", login=img.login, password=img.password,
                          prompt=lab_image.PROMPT_RE,
                          command=(prefix or "") + guest_command(elf, loader, cfg, list(args)),
                          payload_elf=elf, **session)
    else:
        if args:
            raise KexectestError("lab: args (more `kexectest load` words) go to an installed "
                                 "kexectest: agent=\"9p\"", Exit.CONFIG)
        img = image or lab_image.build_image(log=log, suite=kernel_suite)
        if agent == "python":
            img = guest_python.python_image(img, log=log)
        # no host share: what the guest runs arrives by the push, as on hardware
        drives = [*([boot_image] if boot_image else []), *_lab_disks(img, shape)]
        q = Qemu(kernel=img.kernel, initrd=img.initrd, append=img.cmdline, disks=drives,
                 share_host=False, **common)
        boot = "Linux by -kernel"
        opts = RunOptions(serial_url="", login=img.login, password=img.password,
                          prompt=lab_image.PROMPT_RE, push=True, push_agent=agent, via=loader,
                          load_options=lab_values(config), payload_elf=elf, **session)

    bus = diskbus.bus_of(shape.machine, shape.disk_bus).name
    log(f"starting QEMU ({shape.machine}, {shape.memory} MiB, {shape.smp} CPU, "
        f"{shape.disks} disk(s) on {bus}, {q.accel}, {shape.firmware}: {boot})")
    if loader == "direct":
        start = warmstate.Start("cold", f"direct loader: {shape.firmware} boots the payload "
                                        f"from {boot}, no Linux")
        q.start()
    else:
        start = warmstate.launch(q, cold=cold, log=log)
    log(start.line())
    bundle_dir = None
    with q:
        opts.serial_url = q.serial_url
        opts.qemu_stderr = q.stderr_path
        opts.extra_environment = {"lab": {
            "machine": dataclasses.asdict(shape), "accel": q.accel, "loader": loader,
            "firmware": shape.firmware, "boot": boot, "post": post,
            "agent": agent if loader != "direct" else None,
            "qemu_pid": q.pid, "qemu_argv": q.argv_used, "command": opts.command,
            "image": str(img.directory) if img and img.directory else None, "disk_bus": bus,
            "drivers": plan.environment() if plan else None,
            "kernel": {"release": img.kernel_version if img else None,
                       "suite": (img.kernel_suite or None) if img else None,
                       "asked": kernel_suite},
            **start.environment()}}
        try:
            result = run_session(opts, console=console)
            bundle_dir = result.bundle_dir
        except KexectestError as exc:
            q.kill()
            _keep_qemu_stderr(q, out_dir, None)
            if q.timed_out:
                raise KexectestError(f"{exc} (QEMU was ended at its {time_limit:.0f} s limit)",
                                     exc.code) from None
            raise _stage_error(exc) from None
        finally:
            q.kill()
    _keep_qemu_stderr(q, out_dir, bundle_dir)
    return result
