"""segtrain: COCO data, models, training and evaluation for semantic segmentation.

Kept free of heavy imports: `segdeploy`'s torch-free inference path imports submodules of
this package (contract, images, metrics, coco) on machines without PyTorch.
"""

__version__ = "0.1.0"
