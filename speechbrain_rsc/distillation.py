"""Training targets for the student: the soft-label modes of the paper.

Each mode is a small object built once from the training cycle IDs (and,
for teacher modes, the selected teachers' train logits ``[k, n, 4]``) and
called per batch as ``targets(ids, labels, epoch)`` to give a ``[batch, 4]``
target for :func:`soft_cross_entropy`. Every random draw depends only on
``(seed, epoch, cycle)``, never on batch order, so a run is reproducible
and resumable.

Example
-------
>>> z = torch.tensor([[[2.0, 0, 0, 0]], [[0, 0, 0, 0.0]]])  # k=2, n=1
>>> mean = MeanTeacher(["c_0"], teacher_logits=z)
>>> mean(["c_0"], None, epoch=1).tolist() == torch.softmax(
...     torch.tensor([[1.0, 0, 0, 0]]), -1).tolist()
True
"""

from typing import NamedTuple

import torch

from speechbrain_rsc.bank import find_banks, select_banks
from speechbrain_rsc.data.schema import N_CLASSES
from speechbrain_rsc.errors import SelectionError


def soft_cross_entropy(logits, targets):
    """Cross-entropy ``H(targets, softmax(logits))`` averaged over the batch.

    With one-hot targets this is the ordinary cross-entropy.

    Example
    -------
    >>> logits = torch.tensor([[0.0, 0.0]])
    >>> round(soft_cross_entropy(logits, torch.tensor([[1.0, 0.0]])).item(), 4)
    0.6931
    """
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    return -(targets * log_probs).sum(dim=-1).mean()


def _epoch_generator(seed, epoch):
    return torch.Generator().manual_seed(int(seed) * 100_003 + int(epoch))


class SoftLabels:
    """Base class: maps batch cycle IDs to rows of the training set.

    Arguments
    ---------
    train_ids : list of str
        The training manifest's cycle IDs.
    teacher_logits : torch.Tensor, optional
        ``[k, len(train_ids), 4]`` teacher logits in ``train_ids`` order.
    seed : int
        Seed of the per-epoch draws.
    """

    uses_hard_labels = False

    def __init__(self, train_ids, teacher_logits=None, seed=0):
        self.index = {cid: i for i, cid in enumerate(train_ids)}
        self.n = len(train_ids)
        self.teacher_logits = teacher_logits
        self.seed = seed

    def rows(self, ids):
        """Row indices of the batch's cycles in the training set."""
        missing = [cid for cid in ids if cid not in self.index]
        if missing:
            raise KeyError(
                f"{len(missing)} batch cycles are not in the training set "
                f"these targets were built for (first: {missing[0]})"
            )
        return torch.tensor([self.index[cid] for cid in ids])

    def __call__(self, ids, labels, epoch):
        """Targets ``[batch, 4]`` for the cycles ``ids`` at ``epoch``."""
        raise NotImplementedError


class MeanTeacher(SoftLabels):
    """``p = softmax(mean_i z_i)`` (paper eq. 1); also single and curated."""

    def __init__(self, train_ids, teacher_logits, seed=0):
        super().__init__(train_ids, teacher_logits, seed)
        self.probs = torch.softmax(teacher_logits.float().mean(0), dim=-1)

    def __call__(self, ids, labels, epoch):
        """Mean-teacher probabilities of the batch's cycles."""
        return self.probs[self.rows(ids)]


class RandomTeacher(SoftLabels):
    """``p = softmax(z_i)``, ``i`` uniform per cycle and epoch (eq. 2).

    Example
    -------
    >>> z = torch.randn(3, 5, 4)
    >>> rt = RandomTeacher([f"c{i}" for i in range(5)], z, seed=7)
    >>> rt.draws(1).tolist() == rt.draws(1).tolist()
    True
    """

    def __init__(self, train_ids, teacher_logits, seed=0):
        super().__init__(train_ids, teacher_logits, seed)
        self.probs = torch.softmax(teacher_logits.float(), dim=-1)
        self._cache = (None, None)

    def draws(self, epoch):
        """The teacher index of every training cycle at ``epoch``."""
        if self._cache[0] != epoch:
            k = self.probs.shape[0]
            gen = _epoch_generator(self.seed, epoch)
            self._cache = (epoch, torch.randint(k, (self.n,), generator=gen))
        return self._cache[1]

    def __call__(self, ids, labels, epoch):
        """Each cycle's drawn teacher's probabilities."""
        rows = self.rows(ids)
        return self.probs[self.draws(epoch)[rows], rows]


class RawLogits(SoftLabels):
    """The mean teacher logits as targets, no softmax (the failing ablation)."""

    def __call__(self, ids, labels, epoch):
        """Mean logits of the batch's cycles."""
        return self.teacher_logits.float().mean(0)[self.rows(ids)]


class HardLabels(SoftLabels):
    """One-hot labels: the hard-label baseline through the same script."""

    uses_hard_labels = True

    def __call__(self, ids, labels, epoch):
        """One-hot rows of ``labels``."""
        return torch.nn.functional.one_hot(
            labels.long().cpu(), N_CLASSES
        ).float()


class NoisedLabels(HardLabels):
    """One-hot plus Gaussian noise of a given variance (0.1 in the paper).

    Noise is drawn per cycle and per epoch; ``variance`` may be a scalar or
    one value per class.

    Example
    -------
    >>> nl = NoisedLabels(["a", "b"], variance=0.1, seed=3)
    >>> t = nl(["b"], torch.tensor([2]), epoch=1)
    >>> t.shape, bool((t - nl(["b"], torch.tensor([2]), 1)).abs().max() == 0)
    (torch.Size([1, 4]), True)
    """

    def __init__(self, train_ids, teacher_logits=None, seed=0, variance=0.1):
        super().__init__(train_ids, teacher_logits, seed)
        self.std = torch.as_tensor(variance, dtype=torch.float32).sqrt()
        self._cache = (None, None)

    def noise(self, epoch):
        """The noise of every training cycle at ``epoch``."""
        if self._cache[0] != epoch:
            gen = _epoch_generator(self.seed, epoch)
            noise = torch.randn(self.n, N_CLASSES, generator=gen) * self.std
            self._cache = (epoch, noise)
        return self._cache[1]

    def __call__(self, ids, labels, epoch):
        """One-hot plus this epoch's noise of the batch's cycles."""
        one_hot = super().__call__(ids, labels, epoch)
        return one_hot + self.noise(epoch)[self.rows(ids)]


class TeacherNoise(NoisedLabels):
    """One-hot plus noise with the per-class variance of the mean-teacher
    logits over the training set.
    """

    def __init__(self, train_ids, teacher_logits, seed=0):
        variance = teacher_logits.float().mean(0).var(dim=0)
        super().__init__(train_ids, teacher_logits, seed, variance=variance)


class _Mode(NamedTuple):
    """How one ``teacher_mode`` makes its targets."""

    soft_labels: type  # the SoftLabels class
    selection: str  # "first_k", "single", "curated" or None (no teacher)
    text: str  # what the targets are, for people


_MODES = {
    "mean": _Mode(
        MeanTeacher,
        "first_k",
        "the softmax of the mean of the k teachers' logits",
    ),
    "random": _Mode(
        RandomTeacher,
        "first_k",
        "the softmax of one of the k teachers' logits, drawn per cycle and "
        "per epoch",
    ),
    "single": _Mode(
        MeanTeacher, "single", "the softmax of one teacher's logits"
    ),
    "curated": _Mode(
        MeanTeacher,
        "curated",
        "the softmax of the mean logits of the k teachers with the best "
        "Score on the selection split",
    ),
    "teacher_noise": _Mode(
        TeacherNoise,
        "first_k",
        "one-hot labels plus Gaussian noise of the per-class variance of the "
        "mean-teacher logits",
    ),
    "raw_logits": _Mode(
        RawLogits,
        "first_k",
        "the teachers' mean logits without softmax (an ablation)",
    ),
    "noise": _Mode(
        NoisedLabels, None, "one-hot labels plus Gaussian noise (no teacher)"
    ),
    "hard": _Mode(HardLabels, None, "one-hot labels (no teacher)"),
}


class Targets:
    """The student's training targets, declared once in the YAML
    (``targets: !new:speechbrain_rsc.distillation.Targets``, its knob
    ``teacher_mode``): which teachers they come from and how.

    Arguments
    ---------
    mode : str
        ``mean``, ``random``, ``single``, ``curated``, ``teacher_noise``,
        ``raw_logits``, or the baselines without teacher ``noise`` and
        ``hard``.
    k : int
        How many teachers: the first ``k`` seeds in numeric order, or the
        top ``k`` by Score on the selection split for ``curated``.
    teacher_seeds : list of int, optional
        Explicit teacher seeds (overrides ``k``; the first for ``single``).
    noise_variance : float
        The variance of the ``noise`` mode's Gaussian noise.

    Example
    -------
    >>> targets = Targets("hard", k=5)
    >>> targets.describe()["uses_teachers"], targets.describe()["k"]
    (False, 0)
    >>> soft = targets.soft_labels(["a"])
    >>> soft(["a"], torch.tensor([3]), 1).tolist()
    [[0.0, 0.0, 0.0, 1.0]]
    >>> Targets("avg", k=1)
    Traceback (most recent call last):
    ...
    speechbrain_rsc.errors.SelectionError: unknown teacher_mode 'avg' \
(known: mean, random, single, curated, teacher_noise, raw_logits, noise, hard)
    """

    def __init__(self, mode, k, teacher_seeds=None, noise_variance=0.1):
        if mode not in _MODES:
            raise SelectionError(
                f"unknown teacher_mode '{mode}' (known: {', '.join(_MODES)})"
            )
        self.mode = mode
        self.k = k
        self.teacher_seeds = teacher_seeds
        self.noise_variance = noise_variance
        self._spec = _MODES[mode]

    @property
    def uses_teachers(self):
        """Whether the targets come from teachers' logits."""
        return self._spec.selection is not None

    @property
    def uses_hard_labels(self):
        """Whether the student sees the hard labels."""
        return self._spec.soft_labels.uses_hard_labels

    def select_teachers(self, bank_folder, curate_on=None, backbone=None):
        """The teacher banks these targets distill from.

        Arguments
        ---------
        bank_folder : str or Path
            Folder of the teachers' runs (``<run>/bank.safetensors``).
        curate_on : str, optional
            ``"valid"`` or ``"test"``: the split that ranks curated
            teachers.
        backbone : str, optional
            The teachers' backbone: banks of another one are refused.

        Returns
        -------
        list of speechbrain_rsc.bank.LogitBank
            Empty for the modes that use no teacher (noise, hard).
        """
        selection = self._spec.selection
        if selection is None:
            return []
        banks = find_banks(bank_folder)
        others = sorted(
            {str(b.info.get("backbone")) for b in banks} - {str(backbone)}
        )
        if backbone is not None and others:
            raise SelectionError(
                f"{bank_folder} holds {', '.join(others)} banks but "
                f"teacher_backbone is {backbone}: pass --teacher_backbone "
                f"{others[0]} or another --teacher_bank"
            )
        seeds = self.teacher_seeds
        if selection == "single":
            return select_banks(banks, k=1, seeds=seeds)[:1]
        if selection == "curated":
            return select_banks(banks, k=self.k, curate_on=curate_on)
        return select_banks(banks, k=self.k, seeds=seeds)

    def soft_labels(self, train_ids, teacher_logits=None, seed=0):
        """The per-batch targets, a :class:`SoftLabels`.

        Arguments
        ---------
        train_ids : list of str
            Training cycle IDs.
        teacher_logits : torch.Tensor, optional
            ``[k, n, 4]`` selected teachers' train logits (teacher modes).
        seed : int
            Seed of the per-epoch draws.

        Returns
        -------
        SoftLabels
        """
        cls = self._spec.soft_labels
        if self.uses_teachers and teacher_logits is None:
            raise ValueError(f"teacher_mode '{self.mode}' needs teacher logits")
        if cls is NoisedLabels:
            return cls(train_ids, None, seed, variance=self.noise_variance)
        return cls(train_ids, teacher_logits, seed)

    def describe(self):
        """What these targets are, as the student's bank records them.

        Returns
        -------
        dict
            ``mode``, ``k`` (teachers, 0 without), ``selection``,
            ``uses_teachers``, ``uses_hard_labels``, ``text`` (what the
            targets are, in words) and ``noise_variance`` for ``noise``.

        Example
        -------
        >>> Targets("single", k=5).describe()["k"]
        1
        """
        if not self.uses_teachers:
            k = 0
        elif self._spec.selection == "single":
            k = 1
        elif self.teacher_seeds and self._spec.selection == "first_k":
            k = len(self.teacher_seeds)
        else:
            k = self.k
        record = {
            "mode": self.mode,
            "k": k,
            "selection": self._spec.selection,
            "uses_teachers": self.uses_teachers,
            "uses_hard_labels": self.uses_hard_labels,
            "text": self._spec.text,
        }
        if self._spec.soft_labels is NoisedLabels:
            record["noise_variance"] = self.noise_variance
        return record
