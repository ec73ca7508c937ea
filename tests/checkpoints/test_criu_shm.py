"""The /dev/shm files a CRIU image depends on go with the image (core.criu_shm)."""

from __future__ import annotations

import mmap
import os
import subprocess
import sys
from pathlib import Path

from llmux_site.core import criu_shm

HOLDER = """
import mmap, sys, time
with open(sys.argv[1], "r+b") as handle:
    mapped = mmap.mmap(handle.fileno(), 0)
    print("ready", flush=True)
    time.sleep(60)
"""


def test_the_files_a_tree_maps_or_holds_open_under_shm_are_found(tmp_path: Path) -> None:
    shm = tmp_path / "shm"
    shm.mkdir()
    queue = shm / "psm_0001"
    queue.write_bytes(b"\0" * mmap.PAGESIZE)
    gone = shm / "sem.gone"
    gone.write_bytes(b"x" * 32)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(queue)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        found = criu_shm.shm_files_of([holder.pid], shm=shm)
    finally:
        holder.kill()
        holder.wait()
    assert found == {queue}


def test_a_dump_s_files_are_moved_into_the_image_and_put_back_for_each_restore(
    tmp_path: Path,
) -> None:
    shm, image = tmp_path / "shm", tmp_path / "image"
    shm.mkdir()
    image.mkdir()
    queue = shm / "psm_0001"
    with open(queue, "wb") as handle:  # sparse, as vLLM's queues are
        handle.seek(64 << 20)
        handle.write(b"tail")
        handle.seek(4096)
        handle.write(b"head")
    (shm / "link_remap.237").write_bytes(b"semaphore")

    saved = criu_shm.save_after_dump(image, [queue], shm=shm)

    assert saved == ["link_remap.237", "psm_0001"]
    assert sorted(os.listdir(shm)) == []  # nothing of the dead tree is left in /dev/shm
    for _ in range(2):  # an image is restored again and again
        assert criu_shm.put_back(image, shm=shm) == ["link_remap.237", "psm_0001"]
        back = shm / "psm_0001"
        assert back.stat().st_size == (64 << 20) + 4
        assert back.stat().st_blocks * 512 < (1 << 20)  # the holes stayed holes
        with open(back, "rb") as handle:
            handle.seek(4096)
            assert handle.read(4) == b"head"
            handle.seek(64 << 20)
            assert handle.read(4) == b"tail"
        assert (shm / "link_remap.237").read_bytes() == b"semaphore"
        (shm / "link_remap.237").unlink()  # what a restore does with it


def test_stale_link_remaps_are_cleaned_and_nothing_else(tmp_path: Path) -> None:
    shm = tmp_path / "shm"
    shm.mkdir()
    (shm / "link_remap.1").write_bytes(b"")
    (shm / "psm_keep").write_bytes(b"")
    assert criu_shm.clean_link_remaps(shm) == [str(shm / "link_remap.1")]
    assert os.listdir(shm) == ["psm_keep"]
