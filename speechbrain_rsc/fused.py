"""An ensemble of k members of one architecture evaluated as one module.

:class:`FusedEnsemble` returns what
:class:`~speechbrain_rsc.brains.EnsembleModel` returns, to float rounding,
in less time. It is built in four steps, each in one place:

1. :func:`architecture_mismatch`: the members must share one network
   (class, configuration, tensor names and shapes, settings).
2. :func:`shared_front_end`: the parameter-free front end (Kaldi fbank of
   the CNNs and AST, CLAP's log-mel of Audio-CLAP and BTS) is the same for
   every member, so it is computed once, outside the members.
3. :func:`~speechbrain_rsc.models.folding.fold_batch_norms`: the batch
   norms a backbone declares foldable are folded into their convolutions.
4. :func:`stack_members`: one copy of the network after the front end
   holds the members' parameters and buffers stacked, ``[k, ...]``
   (``torch.func.stack_module_state``).

Each call evaluates that network with ``torch.func.functional_call`` in
one of two ways, which :meth:`FusedEnsemble.strategy` picks from the
backbone, the device and the batch size:

- ``"vmap"``: all members at once, ``torch.vmap`` over the stacked
  tensors; a convolution of k members becomes one grouped convolution, a
  linear layer one batched matrix product.
- ``"loop"``: member by member, each with its slice of the stacked
  tensors.

Which is faster (``benchmarks/bench_inference.py``, k=5, 8-s cycles): for
the transformers (BTS, AST) vmap, at every batch size. For the
convolutional backbones the grouped convolutions of vmap are slower than
k ordinary ones on CPU (all batch sizes) and on a GPU past batch 1 (CNN6
on an H200: 1.4x faster than sequential at batch 1, 2.4x slower at batch
64). So by default (``max_vmap_batch="auto"``) a convolutional ensemble is
vmapped only for single cycles on CUDA and otherwise loops, still faster
than the sequential ensemble: front end once, batch norms folded, and
channels-last convolution weights.

Every backbone of :mod:`speechbrain_rsc.models` can be vmapped. A network
that cannot (data-dependent control flow, ``.item()``) raises torch's
error with the way out, ``max_vmap_batch=0``; it never switches to the
loop by itself. Eval mode only: batch norms use their running statistics,
dropout and SpecAugment are off.

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

from speechbrain_rsc.brains import EnsembleModel
from speechbrain_rsc.metrics import mean_logits
from speechbrain_rsc.models.folding import (
    fold_batch_norms,
    has_folds,
    is_convolutional,
)

logger = logging.getLogger(__name__)

# Where the backbones keep their front end -> whether their forward gives
# it ``lens``: ``front_end(wavs)`` (FbankFrontEnd of CNN6, ResNet18,
# EfficientNet-B0, AST) or ``features(wavs, lens)`` (ClapFeatures of
# Audio-CLAP and BTS). Their forward passes the waveforms through it
# before anything else.
FRONT_ENDS = {"front_end": False, "features": True}
_PLAIN_TYPES = (bool, int, float, str)


# ------------------------------------------------------ one architecture


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


def _describe(tensor):
    dtype = str(tensor.dtype).replace("torch.", "")
    return f"{dtype} {list(tensor.shape)}"


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


# ------------------------------------------------------- front end once


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


class _PassThrough(torch.nn.Module):
    """Stands in for the shared front end: returns what it is given."""

    def forward(self, x, *args, **kwargs):
        """``x`` unchanged."""
        return x


# ------------------------------------------------------- stacked network


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


def stack_members(members, front_end_name=None, channels_last=False):
    """One copy of the members' network holding all their tensors.

    Each parameter and buffer of the copy is the members' stacked
    ``[k, ...]``, so the copy is evaluated through
    ``torch.func.functional_call`` with one member's slice (or, under
    ``torch.vmap``, all of them) and cannot be called directly. Being a
    module, it moves with ``.to()`` and is in ``state_dict()``.

    Arguments
    ---------
    members : list of torch.nn.Module
        Of one architecture (:func:`architecture_mismatch`).
    front_end_name : str, optional
        A child replaced by a pass-through; its tensors are not stacked.
    channels_last : bool
        Store each member's slice of the convolution weights
        ``[k, out, in, h, w]`` channels-last.

    Returns
    -------
    torch.nn.Module
        In eval mode.

    Example
    -------
    >>> members = [torch.nn.Linear(3, 4) for _ in range(2)]
    >>> network = stack_members(members)
    >>> network.weight.shape
    torch.Size([2, 4, 3])
    >>> one = {"weight": network.weight[1], "bias": network.bias[1]}
    >>> x = torch.randn(5, 3)
    >>> torch.allclose(functional_call(network, one, (x,)), members[1](x))
    True
    """
    network = copy.deepcopy(members[0]).eval()
    if front_end_name is not None:
        setattr(network, front_end_name, _PassThrough())
    slots = _tensor_slots(network)
    aliases = [*network.named_parameters(remove_duplicate=False)]
    aliases += [*network.named_buffers(remove_duplicate=False)]
    if len(aliases) != len(slots):
        raise ValueError(
            f"{type(network).__name__} shares tensors between modules, "
            "which stacking would untie: use EnsembleModel"
        )
    params, buffers = stack_module_state(members)
    stacked = {**params, **buffers}
    for name, owner, attribute in slots:
        tensor = stacked[name].detach()
        if channels_last and tensor.dim() == 5:
            tensor = _channels_last_members(tensor)
        if isinstance(getattr(owner, attribute), torch.nn.Parameter):
            tensor = torch.nn.Parameter(tensor, requires_grad=False)
        setattr(owner, attribute, tensor)
    return network


def _tensor_slots(network):
    """``(name, owning module, attribute)`` of each parameter and buffer."""
    slots = []
    for name, _ in [*network.named_parameters(), *network.named_buffers()]:
        path, _, attribute = name.rpartition(".")
        slots.append((name, network.get_submodule(path), attribute))
    return slots


# -------------------------------------------------------- the ensemble


class FusedEnsemble(torch.nn.Module):
    """k members of one architecture evaluated as one module.

    Same interface as :class:`speechbrain_rsc.brains.EnsembleModel`:
    ``forward(wavs, lens, prompts)`` gives the mean logits (by
    :func:`speechbrain_rsc.metrics.mean_logits`), :meth:`member_logits`
    each member's, and :attr:`sample_rate` the members' rate. The members
    are copied (stacked); later changes to them are not seen.

    Arguments
    ---------
    members : list of torch.nn.Module
        Trained backbones of one class and configuration (see
        :func:`architecture_mismatch`), on one device.
    chunk_size : int, optional
        Members per vmapped call (``torch.vmap``'s ``chunk_size``), to
        bound memory; ``None``: all at once.
    max_vmap_batch : int or None or "auto"
        The largest batch evaluated with ``torch.vmap``; larger ones go
        member by member (the front end still computed once). ``None``:
        always vmap; ``0``: never. ``"auto"``: 1 on CUDA and 0 elsewhere
        for a convolutional backbone
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

    def __init__(self, members, chunk_size=None, max_vmap_batch="auto"):
        super().__init__()
        members = list(members)
        problem = architecture_mismatch(members)
        if problem is not None:
            raise ValueError(
                f"FusedEnsemble needs members of one architecture: {problem}"
                " (use make_ensemble to fall back to EnsembleModel)"
            )
        if not (
            max_vmap_batch is None
            or max_vmap_batch == "auto"
            or (isinstance(max_vmap_batch, int) and max_vmap_batch >= 0)
        ):
            raise ValueError(
                "max_vmap_batch must be an int >= 0, None or 'auto', not "
                f"{max_vmap_batch!r}"
            )
        self.sample_rate = getattr(members[0], "sample_rate", None)
        self.k = len(members)
        self.chunk_size = chunk_size
        self.max_vmap_batch = max_vmap_batch
        self.front_end_name = shared_front_end(members)
        self.front_end = None
        if self.front_end_name is not None:
            front_end = getattr(members[0], self.front_end_name)
            self.front_end = copy.deepcopy(front_end)
        if has_folds(members[0]):
            members = [fold_batch_norms(m) for m in members]
        self.convolutional = is_convolutional(members[0])
        self.network = stack_members(
            members, self.front_end_name, channels_last=self.convolutional
        )
        # Found once: walking the network on every call took 1.2 ms for
        # the full BTS, these look-ups 0.45 ms (its fused latency on an
        # H200: 38 ms).
        self._stacked_slots = _tensor_slots(self.network)
        self.eval()

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

    def strategy(self, batch_size, device):
        """``"vmap"`` or ``"loop"``: how a batch of ``batch_size`` cycles
        on ``device`` is evaluated (by :meth:`vmap_limit`).

        Example
        -------
        >>> fused = FusedEnsemble([torch.nn.Linear(3, 4)] * 2)
        >>> fused.strategy(64, torch.device("cpu"))
        'vmap'
        """
        limit = self.vmap_limit(device)
        return "vmap" if limit is None or batch_size <= limit else "loop"

    def stacked_state(self):
        """Name -> the members' stacked tensor ``[k, ...]``."""
        return {
            name: getattr(owner, attribute)
            for name, owner, attribute in self._stacked_slots
        }

    def features(self, wavs, lens=None):
        """The shared front end's output (``wavs`` when there is none)."""
        if self.front_end is None:
            return wavs
        if FRONT_ENDS[self.front_end_name]:
            return self.front_end(wavs, lens)
        return self.front_end(wavs)

    def member_logits(self, wavs, lens=None, prompts=None):
        """Each member's logits, ``[k, batch, 4]``."""
        if self.training:
            raise RuntimeError(
                "FusedEnsemble evaluates trained members in eval mode only: "
                "call .eval() (train the members one by one)"
            )
        feats = self.features(wavs, lens)
        state = self.stacked_state()

        def member(member_state):
            return functional_call(
                self.network, member_state, (feats, lens, prompts)
            )

        if self.strategy(len(wavs), wavs.device) == "loop":
            return torch.stack(
                [
                    member({n: t[i] for n, t in state.items()})
                    for i in range(self.k)
                ]
            )
        try:
            return torch.vmap(member, chunk_size=self.chunk_size)(state)
        except RuntimeError as error:
            # torch's own vmap limitations say "vmap: ..."; other errors
            # (a wrong input, say) are the members' and pass unchanged.
            if not str(error).startswith("vmap:"):
                raise
            raise RuntimeError(
                f"torch.vmap cannot evaluate {type(self.network).__name__} "
                f"members ({str(error).splitlines()[0]}): build the "
                "FusedEnsemble with max_vmap_batch=0 to evaluate them one "
                "after another"
            ) from error

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
