"""Training and inference helpers around detectron2's DefaultTrainer."""
from .trainer import CarDDTrainer, inference_dir  # noqa: F401
from .setup import default_cardd_setup, register_datasets_for_cfg, setup_cfg  # noqa: F401
