"""An ensemble of k members of one architecture evaluated as one module.

:class:`FusedEnsemble` stacks the members' parameters and buffers
(``torch.func.stack_module_state``) and runs one copy of the network over
all of them at once with ``torch.vmap`` and ``torch.func.functional_call``:
a convolution of k members becomes one grouped convolution, a linear layer
one batched matrix product. It returns what
:class:`speechbrain_rsc.brains.EnsembleModel` returns, to float rounding.

The front end (Kaldi fbank of the CNNs and AST, CLAP's log-mel of
Audio-CLAP and BTS) is parameter-free and the same for every member: it is
computed once and only the network after it is vmapped. This relies on
the backbones' convention that ``forward`` passes its waveforms through
``self.front_end(wavs)`` (fbank backbones) or ``self.features(wavs,
lens)`` (CLAP family) before anything else; the vmapped copy gets a
pass-through in that slot and is fed the features.

Eval mode only: BatchNorm uses its running statistics (stacked buffers),
dropout and SpecAugment are off. Batch norms that a backbone declares
foldable are folded into their convolutions first
(:mod:`speechbrain_rsc.models.folding`). Should ``vmap`` fail on an
architecture (data-dependent control flow, an operator without a batching
rule), the members are evaluated one after another from the same stacked
state, with a warning logged once.

vmap or one after another (``benchmarks/bench_inference.py``, k=5, 8-s
cycles): for the transformers (BTS, AST) vmap wins at every batch size.
For the convolutional backbones it makes each convolution of the k
members one grouped convolution, which is slower than k ordinary ones on
CPU (all batch sizes) and on a GPU past batch 1 (CNN6 on an H200: 1.4x
faster than sequential at batch 1, 2.4x slower at batch 64). So by default
(``max_vmap_batch="auto"``) a convolutional ensemble is vmapped only for
single cycles on CUDA and otherwise runs member by member, still faster
than the sequential ensemble: front end once, batch norms folded, and
channels-last convolution weights (each member's slice of the stacked
weights is stored channels-last).

Example
-------
>>> from speechbrain_rsc.models.cnn6 import CNN6
>>> members = [CNN6(channels=(4, 8, 8, 16)).eval() for _ in range(3)]
>>> fused = make_ensemble(members)
>>> type(fused).__name__, fused.sample_rate
('FusedEnsemble', 16000)
>>> wavs = torch.randn(2, 16000)
>>> fused.member_logits(wavs).shape
torch.Size([3, 2, 4])
>>> sequential = EnsembleModel(members).eval()
>>> torch.allclose(fused(wavs), sequential(wavs), atol=1e-5)
True
"""

import copy
import logging

import torch
from torch.func import functional_call, stack_module_state

from speechbrain_rsc.bank import mean_logits
from speechbrain_rsc.brains import EnsembleModel
from speechbrain_rsc.models.folding import (
    fold_batch_norms,
    has_folds,
    is_convolutional,
)

logger = logging.getLogger(__name__)

# Attribute of a shared front end -> whether the member's forward gives it
# ``lens`` (``features(wavs, lens)``) or not (``front_end(wavs)``).
FRONT_ENDS = {"front_end": False, "features": True}
_PLAIN_TYPES = (bool, int, float, str)


class _PassThrough(torch.nn.Module):
    """Stands in for the shared front end: returns what it is given."""

    def forward(self, x, *args, **kwargs):
        """``x`` unchanged."""
        return x


def _settings(module):
    """A module's plain settings (numbers, strings, tuples of them)."""
    settings = {}
    for key, value in vars(module).items():
        if key == "training" or key.startswith("_"):
            continue
        if isinstance(value, _PLAIN_TYPES) or (
            isinstance(value, tuple)
            and all(isinstance(v, _PLAIN_TYPES) for v in value)
        ):
            settings[key] = value
    return settings


def _same_value(a, b):
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and bool(torch.equal(a.cpu(), b.cpu()))
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return False
    return a == b


def architecture_mismatch(members):
    """Why ``members`` cannot share one network, or ``None`` if they can.

    They must be of one class, with equal ``backbone_config`` (when they
    carry one), the same parameter and buffer names, shapes and dtypes,
    the same extra state (e.g. BTS's tokenizer) and the same plain
    settings in every submodule.

    Arguments
    ---------
    members : list of torch.nn.Module

    Returns
    -------
    str or None

    Example
    -------
    >>> a, b = torch.nn.Linear(2, 4), torch.nn.Linear(3, 4)
    >>> architecture_mismatch([a, torch.nn.Linear(2, 4)]) is None
    True
    >>> architecture_mismatch([a, b])
    "member 1: 'weight' is float32 [4, 3], member 0 has float32 [4, 2]"
    """
    if not members:
        return "no members"
    first = members[0]
    first_state = first.state_dict(keep_vars=True)
    first_settings = {n: _settings(m) for n, m in first.named_modules()}
    for i, member in enumerate(members[1:], start=1):
        if type(member) is not type(first):
            return (
                f"member {i} is a {type(member).__name__}, member 0 a "
                f"{type(first).__name__}"
            )
        config = getattr(member, "backbone_config", None)
        if config != getattr(first, "backbone_config", None):
            return f"member {i} has another backbone_config: {config}"
        state = member.state_dict(keep_vars=True)
        if state.keys() != first_state.keys():
            names = sorted(state.keys() ^ first_state.keys())
            return f"member {i} differs in state names: {names[:5]}"
        for name, value in state.items():
            ref = first_state[name]
            if name.endswith("_extra_state"):
                if not _same_value(value, ref):
                    return f"member {i} has another '{name}'"
            elif value.shape != ref.shape or value.dtype != ref.dtype:
                return (
                    f"member {i}: '{name}' is {_describe(value)}, member 0 "
                    f"has {_describe(ref)}"
                )
        for name, module in member.named_modules():
            if _settings(module) != first_settings.get(name):
                return f"member {i} has other settings in '{name or 'root'}'"
    return None


def _describe(tensor):
    dtype = str(tensor.dtype).replace("torch.", "")
    return f"{dtype} {list(tensor.shape)}"


def shared_front_end(members):
    """The attribute name of the front end all ``members`` share, if any.

    A front end is shared when it is a parameter-free module under one of
    the names of :data:`FRONT_ENDS` whose buffers are equal in every
    member.

    Example
    -------
    >>> from speechbrain_rsc.models.cnn6 import CNN6
    >>> shared_front_end([CNN6(channels=(4, 8, 8, 16)) for _ in range(2)])
    'front_end'
    >>> shared_front_end([torch.nn.Linear(2, 4)]) is None
    True
    """
    for name in FRONT_ENDS:
        modules = [getattr(m, name, None) for m in members]
        if not all(isinstance(m, torch.nn.Module) for m in modules):
            continue
        if any(True for m in modules for _ in m.parameters()):
            continue
        first = dict(modules[0].named_buffers())
        if all(
            dict(m.named_buffers()).keys() == first.keys()
            and all(_same_value(b, first[n]) for n, b in m.named_buffers())
            for m in modules[1:]
        ):
            return name
    return None


def _channels_last_members(stacked):
    """``[k, out, in, h, w]`` with each ``[i]`` channels-last.

    Strides are set explicitly: with one input channel a permuted copy
    would keep the NCHW strides, and oneDNN would then run the first
    convolution (and the copy after it) in NCHW.
    """
    k, out, inp, h, w = stacked.shape
    strides = (out * inp * h * w, h * w * inp, 1, w * inp, inp)
    result = torch.empty_strided(
        stacked.shape, strides, dtype=stacked.dtype, device=stacked.device
    )
    return result.copy_(stacked)


class _StackedState(torch.nn.Module):
    """The members' stacked tensors as buffers (moved by ``.to()``).

    Buffer names cannot hold dots, so ``a.b.weight`` is kept as
    ``a/b/weight``. With ``channels_last``, stacked convolution weights
    ``[k, out, in, h, w]`` are laid out so that each member's slice is a
    channels-last tensor.
    """

    def __init__(self, tensors, channels_last=False):
        super().__init__()
        for name, tensor in tensors.items():
            if channels_last and tensor.dim() == 5:
                tensor = _channels_last_members(tensor)
            self.register_buffer(name.replace(".", "/"), tensor)

    def tensors(self):
        """Member-state name -> stacked tensor ``[k, ...]``."""
        return {n.replace("/", "."): t for n, t in self.named_buffers()}


class FusedEnsemble(torch.nn.Module):
    """k members of one architecture evaluated as one vmapped module.

    Same interface as :class:`speechbrain_rsc.brains.EnsembleModel`:
    ``forward(wavs, lens, prompts)`` gives the mean logits (by
    :func:`speechbrain_rsc.bank.mean_logits`), :meth:`member_logits`
    each member's, and :attr:`sample_rate` the members' rate. The members
    are copied (stacked); later changes to them are not seen.

    Arguments
    ---------
    members : list of torch.nn.Module
        Trained backbones of one class and configuration (see
        :func:`architecture_mismatch`), on one device.
    use_vmap : bool
        Evaluate the members at once with ``torch.vmap`` (within
        ``max_vmap_batch``); ``False`` evaluates them one after another
        (as the fallback does).
    chunk_size : int, optional
        Members per vmapped call (``torch.vmap``'s ``chunk_size``), to
        bound memory; ``None``: all at once.
    max_vmap_batch : int or None or "auto"
        Batches of more cycles go through the members one after another
        (the front end still computed once); ``None``: always vmap.
        ``"auto"``: 1 on CUDA and 0 on CPU for a convolutional backbone
        (:func:`~speechbrain_rsc.models.folding.is_convolutional`), else
        ``None`` (see the module's notes).

    Example
    -------
    >>> class Net(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.fc = torch.nn.Linear(3, 4)
    ...     def forward(self, wavs, lens=None, prompts=None):
    ...         return self.fc(wavs)
    >>> members = [Net(), Net()]
    >>> fused = FusedEnsemble(members)
    >>> x = torch.randn(5, 3)
    >>> expected = (members[0](x) + members[1](x)) / 2
    >>> torch.allclose(fused(x), expected, atol=1e-6)
    True
    """

    def __init__(
        self, members, use_vmap=True, chunk_size=None, max_vmap_batch="auto"
    ):
        super().__init__()
        members = list(members)
        problem = architecture_mismatch(members)
        if problem is not None:
            raise ValueError(
                f"FusedEnsemble needs members of one architecture: {problem}"
                " (use make_ensemble to fall back to EnsembleModel)"
            )
        rates = {getattr(m, "sample_rate", None) for m in members}
        self.sample_rate = rates.pop()
        self.k = len(members)
        self.use_vmap = use_vmap
        self.chunk_size = chunk_size
        self.max_vmap_batch = max_vmap_batch
        self.front_end_name = shared_front_end(members)
        if has_folds(members[0]):
            members = [fold_batch_norms(m) for m in members]
        template = copy.deepcopy(members[0])
        self.shared_front_end = None
        if self.front_end_name is not None:
            front_end = getattr(members[0], self.front_end_name)
            self.shared_front_end = copy.deepcopy(front_end)
            setattr(template, self.front_end_name, _PassThrough())
        # The network's structure only: its tensors come from the stack.
        # Kept out of the module tree so that .to() and state_dict() skip it.
        self.__dict__["_template"] = template.to("meta").eval()
        self.convolutional = is_convolutional(template)
        params, buffers = stack_module_state(members)
        skip = f"{self.front_end_name}." if self.front_end_name else None
        self.stacked = _StackedState(
            {
                name: tensor.detach()
                for name, tensor in {**params, **buffers}.items()
                if skip is None or not name.startswith(skip)
            },
            channels_last=self.convolutional,
        )
        self._warned = False
        self.eval()

    @classmethod
    def from_members(cls, members, **kwargs):
        """A fused ensemble of ``members`` (see the class arguments)."""
        return cls(members, **kwargs)

    def _features(self, wavs, lens):
        if self.shared_front_end is None:
            return wavs
        if FRONT_ENDS[self.front_end_name]:
            return self.shared_front_end(wavs, lens)
        return self.shared_front_end(wavs)

    def member_logits(self, wavs, lens=None, prompts=None):
        """Each member's logits, ``[k, batch, 4]``."""
        if self.training:
            raise RuntimeError(
                "FusedEnsemble evaluates trained members in eval mode only: "
                "call .eval() (train the members one by one)"
            )
        feats = self._features(wavs, lens)
        state = self.stacked.tensors()

        def member(member_state):
            return functional_call(
                self._template, member_state, (feats, lens, prompts)
            )

        limit = self.vmap_limit(wavs.device)
        if self.use_vmap and (limit is None or len(wavs) <= limit):
            try:
                return torch.vmap(member, chunk_size=self.chunk_size)(state)
            except torch.OutOfMemoryError:
                raise
            except Exception as error:  # any vmap failure
                logits = self._one_by_one(member, state)
                self._fall_back(error)
                return logits
        return self._one_by_one(member, state)

    def vmap_limit(self, device):
        """The largest batch vmapped on ``device`` (``None``: any).

        Example
        -------
        >>> from speechbrain_rsc.models.cnn6 import CNN6
        >>> fused = FusedEnsemble([CNN6(channels=(4, 8, 8, 16))] * 2)
        >>> fused.vmap_limit(torch.device("cpu"))
        0
        >>> fused.vmap_limit(torch.device("cuda"))
        1
        """
        if self.max_vmap_batch != "auto":
            return self.max_vmap_batch
        if not self.convolutional:
            return None
        return 1 if torch.device(device).type == "cuda" else 0

    def _one_by_one(self, member, state):
        return torch.stack(
            [member({n: t[i] for n, t in state.items()}) for i in range(self.k)]
        )

    def _fall_back(self, error):
        """The loop worked where vmap did not: keep to it, say so once."""
        self.use_vmap = False
        if not self._warned:
            self._warned = True
            logger.warning(
                "FusedEnsemble: torch.vmap cannot evaluate %s members "
                "(%s: %s); evaluating the %d members one after another",
                type(self._template).__name__,
                type(error).__name__,
                str(error).splitlines()[0] if str(error) else "",
                self.k,
            )

    def forward(self, wavs, lens=None, prompts=None):
        """Mean logits of the members, ``[batch, 4]``."""
        return mean_logits(self.member_logits(wavs, lens, prompts))


def make_ensemble(members, fused=True, **kwargs):
    """An ensemble model of ``members``: fused when they allow it.

    Arguments
    ---------
    members : list of torch.nn.Module
    fused : bool
        Return a :class:`FusedEnsemble` when the members share one
        architecture (else, or when ``False``, an
        :class:`~speechbrain_rsc.brains.EnsembleModel`).
    **kwargs
        Passed to :class:`FusedEnsemble`.

    Returns
    -------
    FusedEnsemble or EnsembleModel

    Example
    -------
    >>> mixed = [torch.nn.Linear(2, 4), torch.nn.Linear(3, 4)]
    >>> type(make_ensemble(mixed)).__name__
    'EnsembleModel'
    """
    members = list(members)
    if fused:
        problem = architecture_mismatch(members)
        if problem is None:
            return FusedEnsemble(members, **kwargs)
        logger.info("ensemble not fused: %s", problem)
    return EnsembleModel(members)
