"""convert_imageset and compute_image_mean never import torch (start-up: about 2 s and 230 MB saved)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

SCRIPT = """
import sys
from pixsent.cli import main
root, out = sys.argv[1], sys.argv[2]
assert main(["convert_imageset", "--resize_height", "16", "--resize_width", "16", "--workers", "1", "--quiet",
             root + "/", root + "/list.txt", out + "/db"]) == 0
assert main(["compute_image_mean", out + "/db", out + "/mean.binaryproto"]) == 0
print("torch" in sys.modules)
"""


def test_imageset_commands_do_not_import_torch(tmp_path):
    import cv2

    root = tmp_path / "img"
    root.mkdir()
    rng = np.random.default_rng(3)
    for i in range(3):
        cv2.imwrite(str(root / f"{i}.jpg"), rng.integers(0, 255, (20, 24, 3), dtype=np.uint8))
    (root / "list.txt").write_text("".join(f"{i}.jpg {i % 2}\n" for i in range(3)))
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(root), str(tmp_path)], capture_output=True, text=True, check=True
    )
    assert done.stdout.split()[-1] == "False", done.stdout + done.stderr
    assert (tmp_path / "mean.binaryproto").is_file()
