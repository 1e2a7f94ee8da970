"""Task-agnostic metrics registered into mmengine's root METRICS."""
from .shot_metric import CLASS_COUNTS_INFO_KEY, ShotAccuracy

__all__ = ['CLASS_COUNTS_INFO_KEY', 'ShotAccuracy']
