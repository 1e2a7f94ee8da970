"""One contract for modules that use class counts or the RE-OT prior schedule.

``ClassStatisticsHook`` gives the per-class training counts to every
:class:`CountAwareModule` of the model (:meth:`CountAwareModule.set_class_counts`);
``REOTPriorHook`` gives λ(t) of RE-OT Eq. 15 / 34 (Shi et al., Relative Entropic
Optimal Transport: a (Prior-aware) Matching Perspective to (Unbalanced)
Classification, NeurIPS 2023) and the prior exponent to every
:class:`ScheduledPriorModule` (:meth:`ScheduledPriorModule.set_prior_schedule`).
Both hooks select modules with ``isinstance``.

What is stored, and where:

* ``class_counts``: the RAW counts, a float64 buffer (in the state dict, so
  it survives resume; empty until known, resized from the checkpoint on
  load). A class with zero samples counts as ``min_count`` only where a
  prior is formed (the count functions of :mod:`reot_mm.losses.priors` take
  ``min_count``; :meth:`CountAwareModule.log_class_ratio`), so the buffer
  always says what the dataset holds. Checkpoints written before this
  contract stored the smoothed counts (zeros already replaced by
  ``min_count``); they load unchanged and give the same prior, because
  smoothing is idempotent.
* ``prior_weight`` (λ) and ``prior_power``: 0-dim buffers (in the state dict)
  and nowhere else; forward reads their host copy :attr:`prior_schedule`,
  written by the same method (reading a CUDA buffer would sync the device).
* Everything derived from them (log ratios, class-wise log Q) sits in one
  cache, :meth:`CountAwareModule.cached`, emptied whenever counts, λ, device
  or dtype change.

Plain torch and ``reot_mm.losses.priors`` only: layer 2.
"""
from typing import Callable, Optional, Tuple

import torch

from reot_mm.losses import priors


class CountAwareModule(torch.nn.Module):
    """Base of every module that uses per-class training counts.

    Subclasses call ``super().__init__()`` and then :meth:`init_class_counts`
    (a method, not constructor arguments, so mixins into OpenMMLab heads can
    adopt it too). They override :attr:`needs_class_counts` when only some
    options use the counts, and :meth:`class_stats_changed` to drop their own
    derived state (after calling ``super()``).

    Attributes:
        num_classes: expected number of counts (None: any, taken from the
            counts).
        min_count: pseudo-count that replaces a zero count where a prior is
            formed.
    """

    def init_class_counts(self,
                          class_counts=None,
                          num_classes: Optional[int] = None,
                          min_count: float = 1.0,
                          persistent: bool = True) -> None:
        """Register the counts buffer; set the counts given in the config.

        Args:
            class_counts: (C,) counts from the config, or None (filled later by
                ``ClassStatisticsHook``). Once given here, counts of another
                length from the hook are an error, not a silent replacement.
            num_classes: expected C, validated against every count vector.
            min_count: > 0, pseudo-count of classes without samples.
            persistent: keep the counts in the state dict (False for modules
                whose checkpoints must stay loadable into upstream classes).
        """
        if num_classes is not None and (isinstance(num_classes, bool) or
                                        int(num_classes) != num_classes
                                        or num_classes < 1):
            raise ValueError(f'num_classes must be an integer >= 1, got '
                             f'{num_classes!r}')
        if not float(min_count) > 0:
            raise ValueError(f'min_count must be > 0, got {min_count}')
        self.num_classes = None if num_classes is None else int(num_classes)
        self.min_count = float(min_count)
        self._derived = {}
        self._config_count_size = None
        self.register_buffer('class_counts', torch.zeros(0, dtype=torch.float64),
                             persistent=persistent)
        if class_counts is not None:
            self.set_class_counts(class_counts)
            self._config_count_size = int(self.class_counts.numel())

    # ------------------------------------------------------------- contract
    @property
    def needs_class_counts(self) -> bool:
        """Whether the configured options use the counts (hooks may warn)."""
        return True

    @property
    def has_class_counts(self) -> bool:
        return self.class_counts.numel() > 0

    def set_class_counts(self, class_counts) -> None:
        """Store per-class training counts (raw; validated).

        Raises:
            ValueError: not a (C,) vector of finite non-negative numbers with
                a positive sum; C differs from ``num_classes``; or counts were
                given in the config with another length.
        """
        counts = priors.validate_class_counts(class_counts, self.num_classes)
        name = type(self).__name__
        if self._config_count_size is not None and \
                counts.numel() != self._config_count_size:
            raise ValueError(
                f'{name}: class_counts in the config has '
                f'{self._config_count_size} entries but the counts set now '
                f'(e.g. by ClassStatisticsHook from the dataset) have '
                f'{counts.numel()}; expected one count per class: fix '
                'class_counts (or remove it) in the config')
        self.class_counts = counts.to(self.class_counts.device)
        self.class_stats_changed()
        if (counts <= 0).any():
            # warn once here, with the classes; the cached prior is silent
            priors.smooth_zero_counts(counts, self.min_count,
                                      f'{name}.class_counts')

    def require_class_counts(self, num_classes: Optional[int] = None
                             ) -> torch.Tensor:
        """The raw (C,) counts; raise if missing or of another length.

        Args:
            num_classes: C of the scores the counts are used with.
        """
        name = type(self).__name__
        if not self.has_class_counts:
            raise RuntimeError(
                f'{name} needs class_counts: give class_counts=[...] in the '
                "config or add dict(type='ClassStatisticsHook') to "
                'custom_hooks')
        if num_classes is not None and self.class_counts.numel() != num_classes:
            raise ValueError(
                f'{name}: class_counts has {self.class_counts.numel()} entries '
                f'but the scores have {num_classes} classes')
        return self.class_counts

    def log_class_ratio(self, num_classes: Optional[int] = None
                        ) -> torch.Tensor:
        """(C,) float32 log(n_j / Σ_k n_k) (RE-OT Eq. 35) with zero counts
        taken as ``min_count``, cached until the counts change."""
        counts = self.require_class_counts(num_classes)
        return self.cached('log_class_ratio', lambda: priors.log_class_ratio(
            counts, self.min_count))

    # ---------------------------------------------------------------- cache
    def cached(self, key: str, compute: Callable[[], torch.Tensor]):
        """``compute()`` once per change of counts, λ, device or dtype."""
        value = self._derived.get(key)
        if value is None:
            value = self._derived[key] = compute()
        return value

    def class_stats_changed(self) -> None:
        """Drop everything derived from the counts or the schedule."""
        self._derived = {}

    def _apply(self, fn, *args, **kwargs):
        # .to() / .cuda() / .half() move the buffers: derived values follow
        self.class_stats_changed()
        return super()._apply(fn, *args, **kwargs)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + 'class_counts'
        if key in state_dict and key not in self._non_persistent_buffers_set:
            # the buffer is empty until counts are known: take the
            # checkpoint's length before copying
            self.class_counts = torch.empty_like(
                state_dict[key], dtype=torch.float64,
                device=self.class_counts.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.class_stats_changed()


class ScheduledPriorModule(CountAwareModule):
    """A count-aware module whose prior follows λ(t) of RE-OT Eq. 15 / 34.

    Subclasses call :meth:`init_prior_schedule` after
    :meth:`~CountAwareModule.init_class_counts`; ``REOTPriorHook`` calls
    :meth:`set_prior_schedule` during training.
    """

    def init_prior_schedule(self, prior_weight: float = 1.0,
                            prior_power: float = 1.0) -> None:
        self.register_buffer('prior_weight', torch.tensor(0.0))
        self.register_buffer('prior_power', torch.tensor(1.0))
        self.set_prior_schedule(prior_weight, prior_power)

    @property
    def prior_schedule(self) -> Tuple[float, float]:
        """(λ, power) as host floats."""
        return self._schedule

    def set_prior_schedule(self, prior_weight: float,
                           prior_power: float = 1.0) -> None:
        """Set λ(t) of RE-OT Eq. 15 and the exponent of Q (1.03 after t3 in
        the authors' code).

        Raises:
            ValueError: λ outside [0, 1] or a power that is not > 0.
        """
        if not 0.0 <= float(prior_weight) <= 1.0:
            raise ValueError(f'prior_weight (λ) must be in [0, 1], got '
                             f'{prior_weight}')
        if not float(prior_power) > 0:
            raise ValueError(f'prior_power must be > 0, got {prior_power}')
        self.prior_weight.fill_(float(prior_weight))
        self.prior_power.fill_(float(prior_power))
        self._schedule = (float(prior_weight), float(prior_power))
        self.class_stats_changed()

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._schedule = (float(self.prior_weight), float(self.prior_power))

