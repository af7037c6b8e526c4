"""COCO-format data, torch-free.

Finding and checking splits, rasterising annotations, decoding photos, the synthetic set, the dataset report.
"""
