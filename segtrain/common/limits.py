"""The documented limits on what the tools accept, in one place (no imports: the command lines read them at start).

Beyond them input is broken or hostile and refused in one line (README, "Safety"). MAX_IMAGE_PIXELS
can be changed with SEGTRAIN_MAX_IMAGE_PIXELS (segtrain.data.images.max_image_pixels).
"""

MAX_IMAGE_PIXELS = 200_000_000  # a 150-megapixel camera's photos pass; a 20000 x 20000 image does not
MAX_INPUT_SIDE = 8192  # of a model's input: a 8192 x 8192 x 3 float32 batch of one is 805 MB
MAX_CLASSES = 255  # class indices are uint8 mask values and 255 is the ignore index
MIN_INPUT_SIDE = 8  # of a model's input: 1 x 1 would cut a photo into hundreds of thousands of windows
MAX_CLASS_NAME_CHARS = 100  # a class name (legends, summaries, messages); COCO's longest is 14

# Text from outside (segtrain.common.outside_text): config files, summaries, shards, model metadata, env values.
MAX_NESTING = 64  # levels of JSON/YAML nesting; every document the tools read needs fewer than 10
MAX_STRING_CHARS = 1_000_000  # one string (a COCO RLE of a 100-megapixel mask is well below)
MAX_CONFIG_BYTES = 1 << 20  # a --config file
MAX_RECORD_BYTES = 1 << 30  # a summary, a shard's predictions, an image-ids or results file
# $SEGTRAIN_MAX_IMAGE_PIXELS: from a 16 x 16 image to what Pillow and 32-bit image libraries can address.
MAX_IMAGE_PIXELS_RANGE = (16 * 16, 2**31 - 1)
MAX_WORLD_SIZE = 65536  # torchrun processes ($WORLD_SIZE)

# Numbers a user gives `segdeploy batch` and the Predictor (segtrain.common.settings' shared rules).
MAX_THREADS = 256  # inference threads (--threads): more is never faster, and thousands never start
MAX_RUN_BATCH_SIZE = 256  # images or windows per model call in batch and the Predictor (--batch-size)
MAX_WORKERS = 64  # decode and write threads (--workers)
MAX_ACTORS = 4096  # batch --engine ray --actors: Ray actors, each holding one model
MAX_SHARDS = 100_000  # --shard K/N, and N in a shard summary
