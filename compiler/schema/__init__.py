"""Spec models, split by topic; `Spec` is the root."""
from .base import NOT_IN_ID, StrictModel
from .spec import Spec, SweepSection

__all__ = ["NOT_IN_ID", "StrictModel", "Spec", "SweepSection"]
