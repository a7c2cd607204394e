"""Training and inference helpers around detectron2 DefaultTrainer."""
