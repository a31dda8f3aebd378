"""Lab images from several Debian kernels: the private apt configuration, the package
resolution (split packages of sid), a kernel without the lab's modules refused in one line, and
one real lab run through real kexec on trixie's kernel."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kexectest.errors import Exit, KexectestError
from kexectest.lab import drivers
from kexectest.lab import image as li
from kexectest.lab import kernelsuite as ks

SID_DEPENDS = """\
linux-image-7.2.13+deb14-amd64
  PreDepends: linux-base
 |Depends: dracut
  Depends: <linux-initramfs-tool>
    dracut
  Depends: linux-base-7.2.13+deb14-amd64
  Depends: linux-binary-7.2.13+deb14-amd64
  Depends: linux-modules-7.2.13+deb14-amd64
  Depends: linux-modules-7.2.12+deb14-amd64-extra
  Breaks: initramfs-tools
  Suggests: linux-doc-7.2
"""


def test_split_packages_are_the_image_releases_own():
    """sid's image package names its binary, modules and base parts; other packages it names
    (tools, another release) are not kernel parts."""
    image = "linux-image-7.2.13+deb14-amd64"
    assert ks.parse_parts(image, SID_DEPENDS) == [
        "linux-base-7.2.13+deb14-amd64", "linux-binary-7.2.13+deb14-amd64",
        "linux-modules-7.2.13+deb14-amd64"]
    trixie = ("linux-image-6.12.117+deb13-amd64\n  PreDepends: kmod\n  Depends: linux-base\n"
              "  Recommends: firmware-linux-free\n")
    assert ks.parse_parts("linux-image-6.12.117+deb13-amd64", trixie) == []


def test_meta_package_and_candidate_parsing():
    assert ks.parse_image("linux-image-amd64\n  Depends: linux-image-6.12.117+deb13-amd64\n") \
        == "linux-image-6.12.117+deb13-amd64"
    assert ks.parse_image("linux-image-amd64\n  Depends: linux-base-amd64\n") is None
    assert ks.parse_candidate("x:\n  Installed: (none)\n  Candidate: 7.2.13-1\n") == "7.2.13-1"
    assert ks.parse_candidate("x:\n  Installed: (none)\n  Candidate: (none)\n") is None
    assert ks.is_package("linux-image-6.1.0-57-amd64") and not ks.is_package("trixie")
    assert not ks.is_package("linux-image-amd64")  # the meta package is no exact kernel


def test_host_archive_from_deb822_and_one_line_sources(tmp_path):
    """The archive comes from the host's own sources (its main suite, not security)."""
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (d / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n"
        "Components: main\n\nTypes: deb\nURIs: http://mirror.example/debian/\n"
        "Suites: bookworm\nComponents: main\nSigned-By: /k/one.gpg\n")
    assert ks.host_archive((d,)) == ("http://mirror.example/debian", "/k/one.gpg",
                                     "http://mirror.example/debian-security")
    one = tmp_path / "sources.list"
    one.write_text("# comment\ndeb [arch=amd64 signed-by=/k/two.gpg] http://m2.example/debian "
                   "bookworm main\n")
    assert ks.host_archive((tmp_path / "absent", one)) == ("http://m2.example/debian",
                                                           "/k/two.gpg", None)
    assert ks.host_archive((tmp_path / "absent",)) == (ks.DEFAULT_URI, ks.DEFAULT_KEYRING, None)


def test_private_apt_configuration_touches_nothing_of_the_hosts(tmp_path):
    """Every directory apt reads or writes is under the lab cache; the sources list names the
    one suite, from the host's archive."""
    archive = ("http://mirror.example/debian", "/k/one.gpg", "http://mirror.example/sec")
    apt = ks.PrivateApt(tmp_path, "trixie", archive)
    apt.prepare()
    assert (tmp_path / "trixie/sources.list").read_text().splitlines() == [
        "deb [signed-by=/k/one.gpg] http://mirror.example/debian trixie main",
        "deb [signed-by=/k/one.gpg] http://mirror.example/debian trixie-updates main",
        "deb [signed-by=/k/one.gpg] http://mirror.example/sec trixie-security main"]
    assert ks.PrivateApt(tmp_path, "sid", archive).sources_line() == \
        "deb [signed-by=/k/one.gpg] http://mirror.example/debian sid main\n"  # no updates
    opts = dict(o.split("=", 1) for o in apt.options()[1::2])
    for key in ("Dir::Etc::sourcelist", "Dir::Etc::sourceparts", "Dir::State::Lists",
                "Dir::State::status", "Dir::Cache", "Dir::Etc::preferences",
                "Dir::Etc::preferencesparts"):
        assert Path(opts[key]).is_relative_to(tmp_path / "trixie"), key
        assert key == "Dir::Etc::preferences" or Path(opts[key]).exists(), key
    assert (tmp_path / "trixie/status").read_text() == ""  # no host package counts as installed
    assert not apt.lists_fresh()  # never updated: the first use fetches the lists


def test_kept_answer_is_used_while_the_lists_stay(tmp_path, monkeypatch):
    apt = ks.PrivateApt(tmp_path, "sid", ("http://mirror.example/debian", "/k.gpg", None))
    apt.prepare()
    lists = tmp_path / "sid/lists/mirror.example_debian_dists_sid_main_binary-amd64_Packages"
    lists.write_text("Package: x\n")
    (tmp_path / "sid/updated").write_text(apt.sources_line())
    monkeypatch.setattr(ks, "host_archive",
                        lambda: ("http://mirror.example/debian", "/k.gpg", None))
    choice = ks.KernelChoice("sid", "linux-image-7.2.13+deb14-amd64", "7.2.13-1",
                             [("linux-binary-7.2.13+deb14-amd64", "7.2.13-1")])
    calls = []
    monkeypatch.setattr(ks, "resolve", lambda spec, root, log=None: calls.append(spec)
                        or (choice, ks.PrivateApt(root, "sid")))
    assert ks.resolve_kept("sid", tmp_path)[0] == choice and calls == ["sid"]
    assert ks.resolve_kept("sid", tmp_path)[0] == choice and calls == ["sid"]  # kept
    lists.write_text("Package: x\nVersion: 2\n")  # apt-get update brought other lists
    assert ks.resolve_kept("sid", tmp_path)[0] == choice and calls == ["sid", "sid"]


@pytest.mark.parametrize("spec", ["buster2", "linux-image-amd64", "trixie; rm -rf /"])
def test_unknown_suite_is_one_line(spec, tmp_path, monkeypatch):
    monkeypatch.setenv("KEXECTEST_CACHE", str(tmp_path))
    p = subprocess.run([sys.executable, "-m", "kexectest", "lab", "build", "--kernel-suite",
                        spec], capture_output=True, text=True)
    assert p.returncode == Exit.LAB_BUILD, p.stderr
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
    assert f"kernel suite {spec!r} is none of bookworm, trixie, sid" in p.stderr
    assert not (tmp_path / "apt").exists()  # refused before any apt call


def _index(modules: dict[str, list[str]], builtin=()) -> drivers.ModuleIndex:
    idx = drivers.ModuleIndex(release="7.2.13+deb14-amd64", source={"deb": "x.deb"},
                              builtin=set(builtin))
    for name, deps in modules.items():
        idx.modules[name] = drivers.Module(name, f"kernel/{name}.ko.xz", ".xz", deps, [])
    return idx


def test_kernel_without_the_labs_modules_is_refused():
    """9p over virtio is the lab's host share: a kernel without 9pnet_virtio (built in or a
    module) is one line naming what is missing; a built-in virtio_pci is present."""
    idx = _index({"9p": ["9pnet", "netfs"], "9pnet": [], "netfs": [], "edd": []},
                 builtin=["virtio_pci", "virtio", "virtio_ring"])
    with pytest.raises(KexectestError) as info:
        li._lab_modules(idx, "linux-modules-7.2.13+deb14-amd64")
    assert info.value.code == Exit.LAB_BUILD
    assert "has no 9pnet_virtio module" in str(info.value) and "virtio_pci" not in str(info.value)
    idx.modules["9pnet_virtio"] = drivers.Module("9pnet_virtio", "k/9pnet_virtio.ko.xz", ".xz",
                                                 ["9pnet", "virtio_ring"], [])
    order = idx.closure(li.REQUIRED_MODULES)
    assert "virtio_ring" not in order and "virtio_pci" not in order  # built in: not loaded
    assert order.index("9pnet") < order.index("9pnet_virtio") and order.index("netfs") < \
        order.index("9p")


def test_index_source_of_one_package_keeps_its_form():
    """A one-package kernel's module index is kept under the key it always had; a split
    kernel's lists every package."""
    assert drivers.package_source([Path("/c/a.deb")], "6.1.0-57-amd64") == \
        {"deb": "/c/a.deb", "release": "6.1.0-57-amd64"}
    assert drivers.package_source([Path("/c/a.deb"), Path("/c/b.deb")], "7.2") == \
        {"debs": ["/c/a.deb", "/c/b.deb"], "release": "7.2"}
    src = li.KernelSource(package="linux-image-6.1.0-57-amd64", version="6.1.192-3",
                          kernel_path=None, modules_dir=None)
    assert src.key() == {"package": "linux-image-6.1.0-57-amd64", "version": "6.1.192-3"}
    src.parts = [("linux-binary-7.2", "7.2-1")]
    assert src.key()["parts"] == [["linux-binary-7.2", "7.2-1"]]


def test_lab_file_kernel_suite(tmp_path):
    from kexectest.fleet.labfile import load_lab

    f = tmp_path / "lab.toml"
    f.write_text('[[machine]]\nname = "t"\nqemu = { machine = "pc", kernel_suite = "trixie" }\n'
                 '[[machine]]\nname = "d"\nqemu = { machine = "pc" }\n')
    lab = load_lab(f)
    assert lab.machine("t").kernel_suite == "trixie" and lab.machine("d").kernel_suite is None
    assert lab.machine("t").qemu.machine == "pc"
    f.write_text('[[machine]]\nname = "t"\nqemu = { machine = "pc", kernel_suite = "woody" }\n')
    with pytest.raises(KexectestError) as info:
        load_lab(f)
    assert info.value.code == Exit.CONFIG and "qemu.kernel_suite must be one of" in str(info.value)


@pytest.mark.qemu
@pytest.mark.parametrize("suite, release", [("trixie", r"6\.12\.\d+\S*"),
                                            ("sid", r"7\.\d+\.\d+\S*")])
def test_suite_image_runs_to_completed_through_real_kexec(suite, release, tmp_path):
    """trixie's kernel (6.12: virtio core built in, modules under usr/lib/modules) and sid's
    (split into binary, modules and base packages, .ko.xz) as lab images, cached beside
    bookworm's, each with a real lab run through real kexec on it."""
    build = subprocess.run([sys.executable, "-m", "kexectest", "lab", "build", "--kernel-suite",
                            suite], capture_output=True, text=True, timeout=1200)
    assert build.returncode == 0, build.stderr
    directory = Path(build.stdout.strip().splitlines()[-1])
    meta = json.loads((directory / "image.json").read_text())
    assert meta["kernel_suite"] == suite and re.fullmatch(release, meta["kernel_version"])
    assert li.bzimage_version(directory / "vmlinuz") == meta["kernel_version"]
    default = li.build_image()
    assert default.directory != directory  # side by side in the cache
    out = tmp_path / "runs"
    p = subprocess.run([sys.executable, "-m", "kexectest", "lab", "run", "--kernel-suite",
                        suite, "--out", str(out), "--json"], capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads(p.stdout)["verdict"] == "completed"
    env = json.loads(next(out.glob("run-*/environment.json")).read_text())
    kernel = env["lab"]["kernel"]
    assert kernel["release"] == meta["kernel_version"] and kernel["suite"] == suite
    assert re.fullmatch(release, kernel["release"])
