"""The decode stage of a batch run: read an input, reserve its memory, prepare it for the model (decode threads)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from segdeploy.infer.batch.outputs import DEFAULT_SAVE, resolve_save
from segdeploy.infer.batch.plan import Job
from segdeploy.infer.batch.resume import NotAFileError, source_stamp
from segdeploy.infer.memory import MB, decode_bytes_per_pixel, prediction_bytes
from segdeploy.infer.pipeline import Failure, Reserve
from segdeploy.infer.predictor import Predictor, Prepared
from segdeploy.infer.storage import is_remote, shown, why
from segtrain.data.images import ImageReadError, load_image, load_image_bytes

# Memory an image holds while in flight, in bytes per pixel of its original size: the arrays of each chosen
# output (tracemalloc on a 6-megapixel image), and "photo" for a video frame (OpenCV's decoded frame and its
# RGB copy). A photo's decode is counted per format (segdeploy.infer.memory.DECODE_BYTES_PER_PIXEL, measured),
# its prediction by segdeploy.infer.memory.prediction_bytes. Each write thread also holds a fixed working set of
# some tens of MB.
BYTES_PER_PIXEL = {"photo": 7, "mask": 2, "overlay": 8, "color": 6, "confidence": 6, "rle": 10, "frames": 0}


@dataclass(frozen=True)
class StampedJob:
    """A job as the decode stage read it: its source_stamp taken before reading, so a file changed meanwhile
    is redone on a rerun."""

    job: Job
    stamp: dict[str, int]


def image_bytes(save: Sequence[str]) -> int:
    """Bytes per pixel of its original size that an image's outputs hold in flight (without the photo)."""
    return sum(BYTES_PER_PIXEL[kind] for kind in resolve_save(save))


def reduced_decode(save: Sequence[str], tiles: bool) -> bool:
    """Whether a JPEG may be decoded at a reduced size: no chosen output needs the photo (the overlay
    is drawn on it) and photos are not tiled (tiles run at the photo's own resolution)."""
    return "overlay" not in save and not tiles


def decode(job: Job, predictor: Predictor, reserve: Reserve | None = None, save: Sequence[str] = DEFAULT_SAVE,
           reduced: bool = False, room: int | None = None) -> Prepared | Failure:
    """Read and prepare one input; an unreadable file becomes a Failure with the reason.

    `reserve(nbytes)`, when given, is called with the image's estimated memory once its header is read
    (the memory budget); `reduced`: decode a JPEG at a reduced size (see `reduced_decode`); `room`: the
    budget's bytes for images, beyond which an image's prediction alone (a tile canvas) is a Failure.
    """
    t0 = time.perf_counter()
    size: tuple[int, int] | None = None

    def before_decode(full: tuple[int, int], pixels: int) -> None:
        nonlocal size
        size = full
        held = prediction_bytes(predictor.spec, predictor.tiling.plan(full, predictor.spec))
        if room is not None and held > room:
            raise ImageReadError(f"{job.source}: its prediction would hold {-(-held // MB)} MB (the model's "
                                 f"{predictor.spec.num_classes} classes over {full[1]}x{full[0]} pixels), more "
                                 "than the memory budget leaves for images; raise --memory-budget, or tile it "
                                 "coarser (--tile)")
        if reserve is not None:
            reserve(full[0] * full[1] * image_bytes(save) + pixels * decode_bytes_per_pixel(job.source) + held)

    try:
        stamp = source_stamp(job.source)
        min_size = predictor.spec.input_size if reduced else None
        if is_remote(job.source):  # one GET of the whole object, then the same decode as a file's
            image = load_image_bytes(job.source.read_bytes(), name=shown(job.source), min_size=min_size,
                                     before_decode=before_decode)
        else:
            image = load_image(job.source, min_size=min_size, before_decode=before_decode)
        prepared = predictor.prepare(image, source=StampedJob(job, stamp), size=size)
    except FileNotFoundError:
        return Failure(job.key, "file not found (removed during the run?)")
    except NotAFileError:
        return Failure(job.key, "not a regular file")
    except ImageReadError as e:
        return Failure(job.key, str(e).removeprefix(f"{shown(job.source)}: "))
    except OSError as e:  # an object store's read failed (access denied, the network)
        return Failure(job.key, f"cannot read it ({why(e)})")
    except MemoryError:
        return Failure(job.key, "not enough memory to decode it")
    prepared.seconds = {"decode": time.perf_counter() - t0}
    return prepared
