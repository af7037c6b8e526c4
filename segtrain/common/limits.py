"""The documented limits on what the tools accept, in one place (no imports: the command lines read them at start).

Values beyond these are broken or hostile input, refused with a one-line message (README, "Safety"):

- MAX_IMAGE_PIXELS: the largest image decoded (width x height as its header declares); the
  environment variable SEGTRAIN_MAX_IMAGE_PIXELS changes it (segtrain.data.images.max_image_pixels).
- MAX_INPUT_SIDE: the largest side of a model's input (a 8192 x 8192 x 3 float32 batch of one is 805 MB).
- MAX_CLASSES: class indices are uint8 mask values and 255 is the ignore index, so at most 255 classes.
"""

MAX_IMAGE_PIXELS = 200_000_000  # a 150-megapixel camera's photos pass; a 20000 x 20000 image does not
MAX_INPUT_SIDE = 8192
MAX_CLASSES = 255
