"""A small synthetic stand-in for CarDD (the real dataset is licence-restricted and never used by the tests).

``painters`` draws a car body panel and the six damage kinds, ``scene`` lays the instances out and renders an image,
``writer`` writes the COCO json and images (the CarDD release layout, or a plain COCO layout with your own class
names) and derives the SOD layout with cardd_sod's converter.
"""
from .writer import make_synthetic_cardd, make_synthetic_coco, mask_to_polygons, polygons_area_bbox  # noqa: F401
