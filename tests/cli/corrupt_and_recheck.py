#!/usr/bin/env python3
"""Proves tools/recheck.py is not vacuous: copies a --save directory, moves one output element
past the tolerance (INT8: 3 LSB; floats: 10x the tolerance) and expects recheck to exit 1.
Usage: corrupt_and_recheck.py RECHECK_PY SAVE_DIR WORK_DIR"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np

recheck, src, work = sys.argv[1:4]
shutil.rmtree(work, ignore_errors=True)
shutil.copytree(src, work)
meta = json.load(open(os.path.join(work, "problem.json")))
out = np.load(os.path.join(work, "out.npy"))
flat = out.reshape(-1)
i = flat.size // 2
if meta["dtype"] == "int8":
    flat[i] = flat[i] + 3 if flat[i] < 100 else flat[i] - 3
elif meta["dtype"] == "bf16":  # uint16 bit patterns: move the value by 0.5 (tolerance 1.6e-2)
    v = (np.uint32(flat[i]) << 16).view(np.float32) + np.float32(0.5)
    flat[i] = np.uint16(v.view(np.uint32) >> 16)
else:
    flat[i] = flat[i] + flat.dtype.type(0.25)
np.save(os.path.join(work, "out.npy"), out)
rc = subprocess.call([sys.executable, recheck, work])
print(f"recheck on the corrupted copy exited {rc} (expected 1)")
sys.exit(0 if rc == 1 else 1)
