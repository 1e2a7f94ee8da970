"""Single-view inference for classifiers that train on several views."""
from typing import List, Optional, Sequence, Union

import torch
from mmpretrain.structures import DataSample


class FirstViewInference:
    """Mixin for an ``ImageClassifier`` trained on a list of views (BCL,
    GML): ``mode='predict'`` and ``mode='tensor'`` use view 0 (the
    classifier view) when given a list, and a single tensor unchanged, so the
    single-view test pipeline and a multi-view batch give the same answer.
    Put it before ``ImageClassifier`` in the bases."""

    @staticmethod
    def _classifier_view(inputs) -> torch.Tensor:
        return inputs[0] if isinstance(inputs, (list, tuple)) else inputs

    def predict(self, inputs: Union[torch.Tensor, Sequence[torch.Tensor]],
                data_samples: Optional[List[DataSample]] = None,
                **kwargs) -> List[DataSample]:
        """Plain single-view predictions (view 0 if given several views)."""
        return super().predict(self._classifier_view(inputs), data_samples,
                               **kwargs)

    def forward(self, inputs, data_samples=None, mode: str = 'tensor'):
        if mode == 'tensor':
            inputs = self._classifier_view(inputs)
        return super().forward(inputs, data_samples, mode)
