"""The image archive cache of the real node: two test tiers saving the same new image at once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# `podman` as far as `saved_archive` uses it; `save` refuses a file that exists, as podman does.
FAKE_PODMAN = """#!/bin/sh
case "$1 $2" in
  "image exists") exit 0 ;;
  "image inspect") echo sha256-new; exit 0 ;;
esac
out=$5
[ -e "$out" ] && { echo "Error: docker-archive doesn't support modifying existing images" >&2; exit 125; }
echo begun > "$out"; sleep 1; echo "saved $6" >> "$out"
"""
SAVE = "from sampledb_localcluster.images import saved_archive; print(saved_archive('img:1', sys.argv[1]))"


def test_two_tiers_saving_the_same_new_image_at_once_both_get_the_whole_archive(tmp_path: Path) -> None:
    tool = tmp_path / "podman"
    tool.write_text(FAKE_PODMAN, encoding="utf-8")
    tool.chmod(0o755)
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    argv = [sys.executable, "-c", f"import sys; {SAVE}", str(tool)]
    both = [
        subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    answers = [p.communicate(timeout=30) for p in both]
    assert [p.returncode for p in both] == [0, 0], answers
    archive = tmp_path / "cache" / "sampledb-operator" / "node-images" / "sha256-new.tar"
    assert {out.strip() for out, _ in answers} == {str(archive)}
    assert archive.read_text(encoding="utf-8") == "begun\nsaved img:1\n"
    assert sorted(p.name for p in archive.parent.iterdir()) == ["sha256-new.tar"], "no partial file left"
