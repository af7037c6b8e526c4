"""Peak memory of decoding one photo per format, in bytes per pixel of the photo (the memory budget's decode cost).

Each format is measured in a fresh process (Linux): the growth of the peak resident set (VmHWM, reset first) while
segtrain.data.images.load_image decodes a W x H photo (noise over a gradient, so encoders cannot shrink it to
nothing) and the RGB array is kept, divided by W x H. Run: `python benchmarks/decode_memory.py [--size 3000x2000]`;
it writes benchmarks/results/decode_memory.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

FORMATS = {"jpeg": ".jpg", "png": ".png", "webp": ".webp", "bmp": ".bmp", "tiff": ".tif"}

_CHILD = """
import sys
from segtrain.data.images import load_image

def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))

with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # the peak resident set (VmHWM) starts again from the current one
before = status("VmRSS")
image = load_image(sys.argv[1])
print(status("VmHWM") - before)
"""


def _photo(path: Path, width: int, height: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // width, y * 255 // height, (x + y) * 255 // (width + height)], axis=-1)
    noisy = np.clip(base + rng.integers(-20, 21, base.shape), 0, 255).astype(np.uint8)
    Image.fromarray(noisy).save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="3000x2000")
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, suffix in FORMATS.items():
            path = Path(tmp) / f"photo{suffix}"
            _photo(path, width, height)
            runs = [int(subprocess.run([sys.executable, "-c", _CHILD, str(path)], capture_output=True, text=True,
                                       check=True).stdout) for _ in range(3)]
            results[name] = round(max(runs) / (width * height), 2)
            print(f"{name}: {results[name]} bytes per pixel ({args.size})")
    out = Path(__file__).parent / "results" / "decode_memory.json"
    out.write_text(json.dumps({"command": f"python benchmarks/decode_memory.py --size {args.size}",
                               "size": [width, height], "bytes_per_pixel": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
