"""Shared fixtures: one built lab image and one built payload for the whole test session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def lab_image():
    """The virtual lab's guest image, built once (cached across sessions in
    $KEXECTEST_CACHE or ~/.cache/kexectest/lab)."""
    from kexectest.lab.image import build_image, compile_tree

    compile_tree()  # the guests import this tree's kexectest over a read-only share
    return build_image()


@pytest.fixture(scope="session")
def built_payload(tmp_path_factory):
    """The payload ELF, assembled from payloads/ into this session's own directory (so parallel
    work on the tree never swaps it under a running test)."""
    from kexectest import payload

    return payload.build(tmp_path_factory.mktemp("payload") / "kexec_test.elf")


def pytest_addoption(parser):
    parser.addoption("--update-corpus", action="store_true", default=False,
                     help="rewrite tests/corpus/*.expected.json from what the analysis reports now "
                          "(review the diff before committing it)")


@pytest.fixture
def update_corpus(request) -> bool:
    return request.config.getoption("--update-corpus")
