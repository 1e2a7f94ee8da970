from .class_stats_hook import ClassStatisticsHook
from .prior_hook import REOTPriorHook

__all__ = ['ClassStatisticsHook', 'REOTPriorHook']
