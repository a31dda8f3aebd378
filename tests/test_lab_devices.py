"""The virtual lab's device models (issue 8): the lab disks on each bus, the guest kernel
modules a run asks for with their dependencies and what a working disk needs, and real lab
runs (QEMU/TCG, SeaBIOS, Debian's kernel, a real kexec) that show the diagnosis."""

from __future__ import annotations

import json
import lzma
import subprocess
import sys
from pathlib import Path

import pytest

from kexectest.errors import Exit, KexectestError
from kexectest.lab import diskbus
from kexectest.lab import drivers as drv
from kexectest.lab.shape import Shape


# ---- pure units ------------------------------------------------------------------------------

def idx(**mods) -> drv.ModuleIndex:
    """A hand-made index: name=(depends, aliases)."""
    out = drv.ModuleIndex(release="6.1.0-test", source={"dir": "/nowhere"}, builtin={"virtio"})
    for name, (deps, aliases) in mods.items():
        out.modules[name] = drv.Module(name, f"kernel/{name}.ko", "", list(deps), list(aliases))
    return out


KERNEL = idx(scsi_common=((), ()), scsi_mod=(("scsi_common",), ()),
             libata=(("scsi_mod",), ()), libahci=(("libata",), ()),
             ahci=(("libahci", "libata"), ("pci:v*d*sv*sd*bc01sc06i01*",)),
             sd_mod=(("scsi_mod",), ("scsi:t-0x00*", "scsi:t-0x07*")),
             usbcore=((), ()), xhci_hcd=(("usbcore",), ()),
             xhci_pci=(("xhci_hcd", "usbcore"), ("pci:v*d*sv*sd*bc0Csc03i30*",)),
             usb_storage=(("usbcore", "scsi_mod"), ("usb:v*p*d*dc*dsc*dp*ic08isc06ip50in*",)),
             virtio_blk=(("virtio",), ("virtio:d00000002v*",)),
             nvme_core=((), ()), nvme=(("nvme_core",), ("pci:v*d*sv*sd*bc01sc08i02*",)))
AHCI = diskbus.BUSES["ahci"].chain


def test_closure_is_dependencies_first_and_names_meet():
    assert KERNEL.closure(["ahci"]) == ["scsi_common", "scsi_mod", "libata", "libahci", "ahci"]
    assert KERNEL.closure(["nvme-core"]) == ["nvme_core"], "dashes and underscores are one name"
    assert KERNEL.closure(["virtio_blk"]) == ["virtio_blk"], "a built-in dependency is there"
    broken = idx(a=(("b",), ()))
    with pytest.raises(KexectestError) as e:
        broken.closure(["a"])
    assert "a needs b" in str(e.value)
    loop = idx(a=(("b",), ()), b=(("a",), ()))
    with pytest.raises(KexectestError, match="loop a -> b -> a"):
        loop.closure(["a"])


def test_plan_adds_what_a_working_disk_needs():
    p = drv.plan(KERNEL, ["ahci"], AHCI, 1, set())
    assert p.order == ["scsi_common", "scsi_mod", "libata", "libahci", "ahci", "sd_mod"]
    assert p.why["ahci"] == "asked for" and "scsi:t-0x00" in p.why["sd_mod"]
    assert p.why["libahci"] == "needed by ahci" and p.disks_expected == 1
    usb = drv.plan(KERNEL, ["xhci-pci"], diskbus.BUSES["usb-xhci"].chain, 2, set())
    assert usb.order == ["usbcore", "xhci_hcd", "xhci_pci", "scsi_common", "scsi_mod", "sd_mod",
                         "usb_storage"]
    assert "USB storage interface" in usb.why["usb_storage"] and usb.disks_expected == 2
    # a driver of another bus's controller: nothing is added, no disk is waited for
    other = drv.plan(KERNEL, ["nvme"], AHCI, 1, set())
    assert other.order == ["nvme_core", "nvme"] and other.disks_expected == 0
    # the lab's own modules are loaded already: virtio_pci drives the virtio function, and
    # an unrelated driver adds nothing on the way to the disk (no virtio_blk behind it)
    virtio = idx(**{n: (m.depends, m.aliases) for n, m in KERNEL.modules.items()},
                 virtio_pci=((), ("pci:v00001AF4d*sv*sd*bc*sc*i*",)))
    chain = diskbus.BUSES["virtio-blk"].chain
    lab_own = drv.plan(virtio, ["virtio_blk"], chain, 1, {"virtio_pci"})
    assert lab_own.order == ["virtio_blk"] and lab_own.disks_expected == 1
    unrelated = drv.plan(virtio, ["ahci"], chain, 1, {"virtio_pci"})
    assert "virtio_blk" not in unrelated.order and unrelated.disks_expected == 0


def test_a_module_the_kernel_lacks_is_one_config_error():
    with pytest.raises(KexectestError) as e:
        drv.plan(KERNEL, ["ahci", "nosuch_driver"], AHCI, 1, set())
    assert e.value.code == Exit.CONFIG and "'nosuch_driver'" in str(e.value)
    assert "6.1.0-test" in str(e.value) and "\n" not in str(e.value)


def test_disk_args_per_bus():
    disks = [Path("/d0.img"), Path("/d1.img")]
    assert diskbus.disk_args("q35", "ahci", disks) == diskbus.disk_args("q35", None, disks), \
        "q35's own AHCI takes if=ide disks as the lab always did: one warm state"
    assert diskbus.disk_args("pc", "ide", disks) == diskbus.disk_args("pc", None, disks)
    nvme = diskbus.disk_args("q35", "nvme", disks)
    assert nvme.count("-device") == 2 and "bootindex=1" in nvme[3] and "bootindex=2" in nvme[7]
    xhci = diskbus.disk_args("pc", "usb-xhci", disks)
    assert xhci[:2] == ["-device", "qemu-xhci,id=ktbus"] and "usb-storage" in xhci[5]
    assert diskbus.disk_args("pc", "virtio-blk", []) == []


def test_bus_problems():
    assert diskbus.problem("pc", None) is None and diskbus.problem("q35", "nvme") is None
    assert "not 'sata'" in diskbus.problem("pc", "sata")
    assert "use disk_bus ahci" in diskbus.problem("q35", "ide")
    with pytest.raises(KexectestError) as e:
        Shape.of("q35", disk_bus="scsi")
    assert e.value.code == Exit.CONFIG and "disk_bus" in str(e.value)


# ---- the lab kernel's own package ------------------------------------------------------------

@pytest.fixture(scope="module")
def kernel_index(lab_image):
    return drv.module_index(drv.module_source(lab_image))


@pytest.mark.qemu
def test_index_of_the_lab_kernel_package(kernel_index, lab_image):
    k = kernel_index
    assert k.release == lab_image.kernel_version and len(k.modules) > 1000
    assert set(k.modules["ahci"].depends) == {"libahci", "libata"}
    assert k.modules["nvme"].depends == ["nvme_core"], "depends= names the file nvme-core.ko"
    assert k.matching("scsi:t-0x00") == {"sd_mod"}
    assert "usb_storage" in k.matching(diskbus.BUSES["usb-xhci"].chain[1][0])
    assert k.matching(diskbus.BUSES["ahci"].chain[0][0]) == {"ahci"}
    # the whole chain from the asked-for driver to a block device, from the package alone
    p = drv.plan(k, ["nvme"], diskbus.BUSES["nvme"].chain, 1, set())
    assert p.order[-2:] == ["nvme_core", "nvme"] and p.disks_expected == 1
    assert p.order.index("crc64") < p.order.index("t10_pi") < p.order.index("nvme_core"), \
        "nvme-core needs t10-pi, and it the crc64 modules, first"


@pytest.mark.qemu
def test_compressed_modules_read_as_the_package_ones(kernel_index, tmp_path):
    """A modules directory whose files are .ko.xz and .ko.zst (as trixie's and sid's are): the
    same names, dependencies and aliases as the package, and the same bytes once
    decompressed."""
    import zstandard

    names = ["scsi_common", "scsi_mod", "sd_mod"]
    plan = drv.plan(kernel_index, names, (), 0, set())
    drv.prepare(kernel_index, plan)
    files = drv.modules_root() / drv._key(kernel_index.source) / "files"
    tree = tmp_path / "kernel" / "drivers"
    tree.mkdir(parents=True)
    plain = {}
    for n in plan.order:
        data = (files / f"{n}.ko").read_bytes()
        plain[n] = data
        if n == "sd_mod":
            (tree / f"{n}.ko.zst").write_bytes(zstandard.ZstdCompressor().compress(data))
        else:
            (tree / f"{n}.ko.xz").write_bytes(lzma.compress(data))
    (tmp_path / "modules.builtin").write_text("kernel/drivers/block/virtio_blk.ko\n")
    got = drv.build_index({"dir": str(tmp_path), "release": kernel_index.release})
    for n in plan.order:
        want = kernel_index.modules[n]
        assert (got.modules[n].depends, got.modules[n].aliases) == (want.depends, want.aliases)
        data = (tmp_path / got.modules[n].file).read_bytes()
        assert drv.decompress(data, got.modules[n].suffix) == plain[n]
    assert got.builtin == {"virtio_blk"} and got.has("virtio-blk")
    assert got.closure(["sd_mod"]) == kernel_index.closure(["sd_mod"])


# ---- real lab runs: the lab disks on each bus, with and without Linux's driver ---------------

def lab_run(tmp_path, built_payload, lab_image, machine, bus, drivers=()):
    """One lab run as `kexectest lab run --machine M --disk-bus B --driver D..` does it (a warm
    start once the shape was saved), its report checked against the schema."""
    from kexectest.lab.runner import run_virtual
    from reportschema import assert_valid_report

    result = run_virtual(machine, out_dir=tmp_path, payload=built_payload, image=lab_image,
                         quiet=True, accel="tcg", timeout=20.0, disk_bus=bus,
                         drivers=list(drivers))
    report = json.loads((result.bundle_dir / "report.json").read_text())
    env = json.loads((result.bundle_dir / "environment.json").read_text())
    assert_valid_report(report)
    assert env["lab"]["disk_bus"] == bus
    return result, report, env


def function_of(report: dict, kind_class: str) -> dict:
    """The one PCI function of a class, as the run's device table has it."""
    (row,) = [r for r in report["devices"]["table"] if r["class"] == kind_class]
    return row


def disk_cause(report: dict) -> dict:
    """The cause of the first failed or hung int 13h call (drive 80h)."""
    return next(c for c in report["causes"] if c["drive"] == "80")


@pytest.mark.qemu
def test_ahci_held_by_linux_hangs_the_disk_step(tmp_path, built_payload, lab_image):
    """q35's AHCI with Linux's ahci driver loaded before kexec: the disk step stops, and the
    report says where, on which device, and which driver held it (the issue's done-when)."""
    result, report, env = lab_run(tmp_path, built_payload, lab_image, "q35", "ahci", ["ahci"])
    drv_env = env["lab"]["drivers"]
    assert drv_env["requested"] == ["ahci"] and "sd_mod" in drv_env["loaded"], \
        "sd_mod comes with it: without it Linux has no disk to match the drive to"
    ahci = function_of(report, "AHCI controller")
    assert ahci["linux_driver"] == "ahci" and ahci["bus_master_before"] is True
    assert report["verdict"] == "hung" and report["hang"]["step"] in ("read-chs", "read-lba")
    dev = report["hang"]["device"]
    assert dev["linux_driver"] == "ahci" and dev["bdf"] == ahci["bdf"]
    assert dev["bus_master_after"] is False
    line = result.analysis.one_line()
    assert line.startswith(f"hung at step {report['hang']['index']:03d} {report['hang']['step']}")
    assert f"drive 80h is on {ahci['bdf']}" in line and "Linux's ahci driver" in line


@pytest.mark.qemu
def test_ide_with_ata_piix_completes(tmp_path, built_payload, lab_image):
    """PIIX IDE held by ata_piix: SeaBIOS's ATA driver uses port I/O, so the disk still reads;
    the steps still name the controller and its driver (the EDD 3.0 device path)."""
    result, report, env = lab_run(tmp_path, built_payload, lab_image, "pc", "ide", ["ata_piix"])
    assert report["verdict"] == "completed", report["summary"]
    step = next(s for s in report["steps"] if s["id"] == "read-chs")
    assert step["device"]["linux_driver"] == "ata_piix"
    assert step["device"]["class"] == "IDE controller"
    assert "EDD 3.0 device path" in report["devices"]["drives"]["80"]["evidence"]


@pytest.mark.qemu
def test_virtio_blk_held_by_the_labs_own_virtio_pci(tmp_path, built_payload, lab_image):
    """No driver asked for: the lab's own virtio_pci (for its 9p share) binds the virtio block
    function too, and kexec clears its bus mastering: the disk step stops."""
    result, report, env = lab_run(tmp_path, built_payload, lab_image, "q35", "virtio-blk")
    assert env["lab"]["drivers"] is None
    assert report["verdict"] in ("hung", "failed-steps"), report["summary"]
    cause = disk_cause(report)
    fn = function_of(report, "virtio block device")
    assert cause["device"]["bdf"] == fn["bdf"] and cause["device"]["linux_driver"] == "virtio-pci"
    assert "cannot use its virtqueue" in cause["sentence"]


@pytest.mark.qemu
def test_nvme_without_and_with_the_nvme_driver(tmp_path, built_payload, lab_image):
    result, report, _ = lab_run(tmp_path / "without", built_payload, lab_image, "q35", "nvme")
    assert report["verdict"] == "completed", report["summary"]
    fn = function_of(report, "NVMe controller")
    assert fn["linux_driver"] is None and fn["bus_master_after"] is True
    result, report, env = lab_run(tmp_path / "with", built_payload, lab_image, "q35", "nvme",
                                  ["nvme"])
    assert report["verdict"] in ("hung", "failed-steps"), report["summary"]
    cause = disk_cause(report)
    fn = function_of(report, "NVMe controller")
    assert cause["device"]["bdf"] == fn["bdf"] and cause["device"]["linux_driver"] == "nvme"
    assert "the BIOS's NVMe driver cannot use its queues" in cause["sentence"]
    assert "Linux's nvme driver" in result.analysis.one_line()


@pytest.mark.qemu
def test_usb_storage_on_xhci_held_by_linux(tmp_path, built_payload, lab_image):
    """A USB disk behind xHCI with xhci_pci loaded: usb-storage and sd_mod come with it, the
    disk is matched by its MBR signature (SeaBIOS gives USB drives no device path)."""
    result, report, env = lab_run(tmp_path, built_payload, lab_image, "q35", "usb-xhci",
                                  ["xhci_pci"])
    assert {"usb_storage", "sd_mod"} <= set(env["lab"]["drivers"]["loaded"])
    assert report["verdict"] in ("hung", "failed-steps"), report["summary"]
    cause = disk_cause(report)
    fn = function_of(report, "xHCI USB controller")
    assert cause["device"]["bdf"] == fn["bdf"] and cause["device"]["linux_driver"] == "xhci_hcd"
    assert "MBR signature" in cause["evidence"]


@pytest.mark.qemu
def test_a_module_that_fails_in_the_guest_is_a_stage_error(tmp_path, built_payload, lab_image):
    """kvm_intel cannot load on a TCG guest (no VMX): one line naming it and the guest's own
    message, the lab stage's exit code, and the bundle kept."""
    from kexectest.lab.runner import run_virtual

    with pytest.raises(KexectestError) as e:
        run_virtual("q35", out_dir=tmp_path, payload=built_payload, image=lab_image, quiet=True,
                    accel="tcg", timeout=20.0, drivers=["kvm_intel"])
    text = str(e.value)
    assert e.value.code == Exit.LAB_STAGE and "\n" not in text
    assert text.startswith("lab: module kvm_intel failed to load in the guest: insmod: ")
    assert "(kernel: " in text and "kvm" in text.split("(kernel: ")[1]
    assert list(tmp_path.glob("run-*.tar.gz")), "the capture is kept"
