"""Loss math (pure functions) and thin modules registered in mmengine's root MODELS."""
from .reot_loss import REOTLoss, inverse_reot_loss

__all__ = ['REOTLoss', 'inverse_reot_loss']
