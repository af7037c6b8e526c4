"""`segdeploy batch --image-ids labels.json`: the COCO image id and pixel grid of each input, so predictions.json
loads with pycocotools' `COCO.loadRes` against that file (torch-free). Only its "images" are read, so an image-info
file without annotations (COCO's test-dev) serves too. `--gt` gives the same from the file it scores against.

Inputs are matched by their path relative to the folder given, as `file_name`; labels.json may describe the
file's stored pixel grid or the grid after EXIF orientation (as segtrain.data.coco decides), and the masks are
turned into the grid it describes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from segdeploy.infer.batch.ground_truth import exif_orientation, undo_exif_orientation
from segdeploy.infer.batch.plan import IMAGE, Job, ground_truth_root
from segtrain.common.json_shape import ListOf, Record, ShapeError, check
from segtrain.data.coco import DataError
from segtrain.data.coco_schema import IMAGE as IMAGE_SHAPE
from segtrain.data.images import ImageReadError, image_size

IMAGES = Record({"images": ListOf(IMAGE_SHAPE)}, expected="a COCO object with images")


class ImageIds:
    """Image ids by input key; `truth_grid` turns a mask into the pixel grid the file describes for it."""

    def __init__(self, ann_file: Path, jobs: list[Job]) -> None:
        self.ann_file = Path(ann_file)
        ground_truth_root(jobs, "--image-ids")  # one folder, as --gt
        images = _read_images(self.ann_file)
        self._entries = {Path(im["file_name"]).as_posix(): im for im in images}
        self._paths = {job.key: Path(job.source) for job in jobs if job.kind == IMAGE}

    def has(self, key: str) -> bool:
        return key in self._entries

    def image_id(self, key: str) -> int | None:
        entry = self._entries.get(key)
        return None if entry is None else entry["id"]

    def truth_grid(self, key: str, mask: np.ndarray) -> np.ndarray:
        """A mask in the displayed grid (after EXIF orientation) -> the grid labels.json describes for `key`."""
        entry = self._entries[key]
        try:
            raw = image_size(self._paths[key], exif=False)
        except (ImageReadError, KeyError):
            return mask
        if raw == (entry["height"], entry["width"]):  # labels.json describes the stored grid
            return undo_exif_orientation(mask, exif_orientation(self._paths[key]))
        return mask


def _read_images(ann_file: Path) -> list[dict]:
    """The "images" of a COCO file, checked; DataError naming the file and the problem."""
    try:
        with open(ann_file, encoding="utf-8") as f:
            data = json.load(f)
        check(data, IMAGES)
    except FileNotFoundError:
        raise DataError(f"{ann_file}: file not found") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{ann_file}: malformed JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except RecursionError:
        raise DataError(f"{ann_file}: JSON nested too deeply to be a COCO file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{ann_file}: cannot read ({e})") from None
    except ShapeError as e:
        raise DataError(f"{ann_file}: {e}") from None
    ids: dict[int, str] = {}
    for im in data["images"]:
        if ids.setdefault(im["id"], im["file_name"]) != im["file_name"]:
            raise DataError(f"{ann_file}: image id {im['id']} is given to both {ids[im['id']]!r} and "
                            f"{im['file_name']!r}")
    return data["images"]
