"""CarDD datasets, validation, synthetic data and transforms."""
from .categories import CARDD_CATEGORIES, CARDD_CLASS_NAMES, size_bucket  # noqa: F401
from .synthetic import make_synthetic_cardd  # noqa: F401
