"""Linear probe: a frozen pretrained backbone with a trained linear head."""
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from mmpretrain.models.classifiers import ImageClassifier
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample


@MODELS.register_module()
class LinearProbeClassifier(ImageClassifier):
    """``ImageClassifier`` whose backbone (and neck) are frozen.

    The standard linear evaluation of learned representations (RE-OT Table 3
    "Lin." column; Shi et al., NeurIPS 2023): the backbone of a contrastive checkpoint is
    loaded (``backbone.init_cfg = dict(type='Pretrained', checkpoint=...,
    prefix='backbone.')``), its parameters get ``requires_grad=False`` and
    its batch-norm layers stay in eval mode (running statistics unchanged)
    even when the model is put in train mode; only the head is trained.

    ``predict`` also stores the L2-normalised pooled feature under
    ``'feature'``, so ``KNNAccuracy`` can evaluate the same frozen
    representation in the same run.

    Args:
        frozen (Sequence[str]): Sub-modules to freeze. Defaults to
            ``('backbone', 'neck')``.
        **kwargs: :class:`mmpretrain.models.ImageClassifier` arguments.
    """

    def __init__(self, *args, frozen: Sequence[str] = ('backbone', 'neck'),
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.frozen = tuple(frozen)
        for name in self.frozen:
            module = getattr(self, name, None)
            if name != 'neck' and module is None:
                raise ValueError(f'LinearProbeClassifier: no sub-module '
                                 f'{name!r} to freeze')
            if module is not None:
                for param in module.parameters():
                    param.requires_grad_(False)
        self._frozen_modules_eval()

    def _frozen_modules_eval(self) -> None:
        for name in self.frozen:
            module = getattr(self, name, None)
            if module is not None:
                module.eval()

    def train(self, mode: bool = True):
        """Train the head only: frozen modules stay in eval mode."""
        super().train(mode)
        self._frozen_modules_eval()
        return self

    def predict(self, inputs: torch.Tensor,
                data_samples: Optional[List[DataSample]] = None,
                **kwargs) -> List[DataSample]:
        """Head predictions plus the normalised pooled feature."""
        feats = self.extract_feat(inputs)
        results = self.head.predict(feats, data_samples, **kwargs)
        pooled = feats[-1] if isinstance(feats, (tuple, list)) else feats
        if pooled.ndim == 4:
            pooled = pooled.mean(dim=(2, 3))
        pooled = F.normalize(pooled.flatten(1).float(), dim=-1)
        for sample, feature in zip(results, pooled):
            sample.set_field(feature, 'feature', field_type='data')
        return results
