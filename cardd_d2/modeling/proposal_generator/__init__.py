"""Proposal generators registered in detectron2's PROPOSAL_GENERATOR_REGISTRY on import."""
from .rpn import CarDDRPN  # noqa: F401
