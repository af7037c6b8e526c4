"""The documented limits on what the tools accept, in one place (no imports: the command lines read them at start).

Beyond them input is broken or hostile and refused in one line (README, "Safety"). MAX_IMAGE_PIXELS
can be changed with SEGTRAIN_MAX_IMAGE_PIXELS (segtrain.data.images.max_image_pixels).
"""

MAX_IMAGE_PIXELS = 200_000_000  # a 150-megapixel camera's photos pass; a 20000 x 20000 image does not
MAX_INPUT_SIDE = 8192  # of a model's input: a 8192 x 8192 x 3 float32 batch of one is 805 MB
MAX_CLASSES = 255  # class indices are uint8 mask values and 255 is the ignore index
