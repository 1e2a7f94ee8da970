"""Loss math (pure functions) and thin modules registered in mmengine's root MODELS."""
from .reot_loss import REOTLoss, inverse_reot_loss
from .reot_contrastive_loss import (REOTContrastiveLoss,  # noqa: F401
                                    reot_contrastive_loss)
from .gml_loss import GMLLoss  # noqa: F401
from .bcl_loss import (BCLLoss, balanced_contrastive_loss,  # noqa: F401
                       logit_compensated_cross_entropy)
from .reot_pixel_loss import REOTPixelLoss
from .reot_roi_loss import REOTRoILoss, log_detection_prior
# the epoch-varying prior's schedule λ(t) (RE-OT Eq. 34), for loops without a Runner
from .priors import prior_schedule, resolve_milestones

__all__ = ['REOTLoss', 'inverse_reot_loss', 'REOTPixelLoss',
           'REOTRoILoss', 'log_detection_prior', 'REOTContrastiveLoss',
           'reot_contrastive_loss', 'GMLLoss', 'BCLLoss',
           'balanced_contrastive_loss', 'logit_compensated_cross_entropy',
           'prior_schedule', 'resolve_milestones']
