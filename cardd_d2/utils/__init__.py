"""Small helpers shared across cardd_d2 (no detectron2 imports)."""
