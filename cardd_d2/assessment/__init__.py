"""Damaged/undamaged classifier and damage assessment."""
