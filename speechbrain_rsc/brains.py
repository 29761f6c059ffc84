"""The Brain classes: one per way of training, sharing everything else.

- :class:`TeacherBrain` trains on hard labels (the paper's teachers);
- :class:`DistillBrain` trains on the soft targets of a teacher bank;
- :class:`EnsembleBrain` evaluates k trained members as one model
  (``ensemble.py --audio``).

All of them forward ``(wavs, lens, prompts)`` through ``modules.model``,
log Sp/Se/Score per epoch, keep the checkpoint with the best selection
Score, and can write their logits as a bank.

From ``hparams`` a Brain reads SpeechBrain's own ``seed`` and
``epoch_counter``; the recipe's knobs come as :class:`BrainOptions`, which
the recipe scripts fill from their YAML keys one by one.

On CUDA the data loaders pin their batches (unless ``pin_memory`` is given)
and batches are copied to the device without blocking.
"""

import logging
import math
import random
from dataclasses import dataclass, field, fields

import numpy as np
import speechbrain as sb
import torch
from torch.nn.parallel import DistributedDataParallel

from speechbrain_rsc.bank import LogitBank
from speechbrain_rsc.data.schema import N_CLASSES
from speechbrain_rsc.distillation import soft_cross_entropy
from speechbrain_rsc.errors import OptionError, RecipeError
from speechbrain_rsc.metrics import ICBHIStats, mean_logits
from speechbrain_rsc.sampling import EpochShuffle
from speechbrain_rsc.trained_model import load_trained

logger = logging.getLogger(__name__)


@dataclass
class BrainOptions:
    """How a Brain trains and evaluates (each field is a recipe YAML key).

    Attributes
    ----------
    lr_schedule : callable, optional
        Epoch -> learning rate, applied at the start of every epoch.
    train_logger : speechbrain.utils.train_logger.TrainLogger, optional
        Receives the per-epoch statistics.
    test_loader_kwargs : dict
        Loader options for validation, test and logit export.
    channels_last : bool
        Convolution weights and activations in NHWC, faster for the CNN
        backbones on CPU and GPU.
    ma_beta : float, optional
        After every optimizer step each weight and batch-norm statistic
        becomes ``ma_beta * old + (1 - ma_beta) * new`` (the reference
        BTS, Audio-CLAP and AST training, 0.5).
    best_min_se : float, optional
        An epoch whose selection Se is not above it never becomes the
        selected checkpoint while one that is exists (5 in the reference).
    cuda_precision : str, optional
        Training and evaluation precision on CUDA when ``--precision`` and
        ``--eval_precision`` are not given (``fp16``, as the reference
        trains and evaluates under autocast; the CPU stays fp32).
    selection_split : str
        The split whose Score selects the checkpoint (``valid``, or
        ``test`` under ``protocol: paper``): the train log names it.

    Example
    -------
    >>> BrainOptions.from_hparams({"ma_beta": 0.5}).ma_beta
    0.5
    """

    lr_schedule: object = None
    train_logger: object = None
    test_loader_kwargs: dict = field(default_factory=dict)
    channels_last: bool = False
    ma_beta: float = None
    best_min_se: float = None
    cuda_precision: str = None
    selection_split: str = "valid"

    @classmethod
    def from_hparams(cls, hparams):
        """The options found in ``hparams`` under the same names (and
        ``test_dataloader_opts``), for scripts that pass only hparams.
        """
        hparams = dict(hparams or {})
        hparams.setdefault(
            "test_loader_kwargs", hparams.get("test_dataloader_opts") or {}
        )
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in hparams.items() if k in names})


def _with_cuda_precision(run_opts, precision):
    """Run options with ``precision`` and ``eval_precision`` set to
    ``precision`` when the run is on CUDA and the command line gave
    neither (mixed precision, as the reference code trains and evaluates;
    off on the CPU).

    Example
    -------
    >>> _with_cuda_precision({"device": "cuda:0"}, "fp16")
    {'device': 'cuda:0', 'precision': 'fp16', 'eval_precision': 'fp16'}
    >>> _with_cuda_precision({"device": "cpu"}, "fp16")
    {'device': 'cpu'}
    """
    if isinstance(run_opts, sb.utils.run_opts.RunOptions):
        run_opts = {k: run_opts[k] for k in run_opts.overridden_args}
    run_opts = dict(run_opts or {})
    device = run_opts.get("device") or sb.utils.distributed.infer_device()
    if precision and "cuda" in str(device):
        for name in ("precision", "eval_precision"):
            run_opts.setdefault(name, precision)
    return run_opts


def _check_grad_norm(max_grad_norm):
    """Refuse a ``max_grad_norm`` that would not leave gradients alone.

    SpeechBrain documents a negative value as "no clipping", but passes it
    to ``torch.nn.utils.clip_grad_norm_``, which then multiplies every
    gradient by a negative factor (gradient ascent). ``.inf`` disables
    clipping exactly: the clip factor is capped at 1.

    Example
    -------
    >>> _check_grad_norm(float("inf"))
    >>> _check_grad_norm(-1.0)
    Traceback (most recent call last):
    ...
    speechbrain_rsc.errors.OptionError: max_grad_norm -1.0 must be...
    """
    if not max_grad_norm > 0:
        raise OptionError(
            f"max_grad_norm {max_grad_norm} must be positive: SpeechBrain "
            "passes it to clip_grad_norm_, which turns a negative value "
            "into gradient ascent. Use .inf (YAML) or inf (command line) "
            "for no clipping, as the reference trains"
        )


def _seed_all(seed):
    # Not seed_everything: it would also reseed the data sampler.
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class TrainingDiverged(RuntimeError):
    """The loss stayed non-finite: the run did not converge."""


class NoTrainingError(RecipeError, RuntimeError):
    """A run took no optimizer step: its model was never trained."""


def is_selection_checkpoint(ckpt):
    """An end-of-epoch checkpoint ranked by :func:`selection_rank` (not
    SpeechBrain's mid-epoch ones).
    """
    return "eligible" in ckpt.meta


def selection_rank(ckpt):
    """The rank of a checkpoint, highest kept: eligible epochs first, then
    the higher Score, then the EARLIER epoch (the reference keeps a new
    best only if its Score is strictly higher). When no epoch is eligible
    (Se never above ``best_min_se``; the reference crashes), the best
    Score among them is kept, and :func:`selection_record` says so.

    Example
    -------
    >>> from types import SimpleNamespace as C
    >>> ckpts = [
    ...     C(meta={"eligible": True, "score": 60.0, "epoch": 2}),
    ...     C(meta={"eligible": True, "score": 60.0, "epoch": 5}),
    ...     C(meta={"eligible": False, "score": 70.0, "epoch": 3}),
    ... ]
    >>> max(ckpts, key=selection_rank).meta["epoch"]
    2
    """
    meta = ckpt.meta
    score = meta["score"]
    return (
        meta["eligible"],
        -math.inf if math.isnan(score) else score,
        -meta["epoch"],
    )


def selection_record(meta, options, optimizer_steps):
    """How the loaded checkpoint was chosen, for the bank's info.

    Example
    -------
    >>> meta = {"score": 55.0, "se": 3.0, "epoch": 4, "eligible": False}
    >>> selection_record(meta, BrainOptions(best_min_se=5.0), 12)["rule"]
    'no epoch had Se above best_min_se 5.0 on valid: kept the best Score'
    """
    split = options.selection_split
    if meta["eligible"]:
        rule = f"the first epoch with the best {split} Score"
        if options.best_min_se is not None:
            rule += f" among those with Se above {options.best_min_se}"
    else:
        rule = (
            f"no epoch had Se above best_min_se {options.best_min_se} on "
            f"{split}: kept the best Score"
        )
    return {
        "epoch": meta["epoch"],
        "split": split,
        "score": meta["score"],
        "se": meta["se"],
        "eligible": meta["eligible"],
        "rule": rule,
        "optimizer_steps": optimizer_steps,
    }


class RSCBrain(sb.Brain):
    """Shared forward, metrics, selection and logit export.

    Arguments
    ---------
    modules, opt_class, hparams, run_opts, checkpointer
        As for :class:`speechbrain.Brain`.
    options : BrainOptions, optional
        The recipe's training options (default: read from ``hparams``).
    """

    def __init__(
        self,
        modules=None,
        opt_class=None,
        hparams=None,
        run_opts=None,
        checkpointer=None,
        options=None,
    ):
        for name, module in (modules or {}).items():
            if getattr(module, "pending_weights", None) is not None:
                raise RuntimeError(
                    f"modules.{name} declares the pretrained weights "
                    f"{module.pending_weights} but they were never loaded: "
                    "run its Pretrainer first (collect_files, then "
                    "load_collected), or set use_pretrained: False"
                )
        self.options = options or BrainOptions.from_hparams(hparams)
        run_opts = _with_cuda_precision(run_opts, self.options.cuda_precision)
        super().__init__(modules, opt_class, hparams, run_opts, checkpointer)
        _check_grad_norm(self.max_grad_norm)
        if self.options.channels_last:
            self.modules.to(memory_format=torch.channels_last)
        self._averaged = None  # the weights the moving average updates

    def make_dataloader(
        self, dataset, stage, ckpt_prefix="dataloader-", **loader_kwargs
    ):
        """SpeechBrain's loader, pinning host memory when on CUDA; a
        shuffled training loader draws an independent order for every
        (seed, epoch) (:class:`~speechbrain_rsc.sampling.EpochShuffle`).
        """
        if str(self.device).startswith("cuda"):
            loader_kwargs.setdefault("pin_memory", True)
        shuffle = stage == sb.Stage.TRAIN and loader_kwargs.pop("shuffle", 0)
        if shuffle:
            loader_kwargs["sampler"] = EpochShuffle(dataset, self.hparams.seed)
        loader = super().make_dataloader(
            dataset, stage, ckpt_prefix, **loader_kwargs
        )
        if shuffle and not self.distributed_launch:
            # under DDP SpeechBrain wraps the sampler and sets this itself
            self.train_sampler = loader_kwargs["sampler"]
        return loader

    def compute_forward(self, batch, stage):
        """Logits ``[batch, 4]`` of the batch's cycles."""
        batch = batch.to(self.device, non_blocking=True)
        wavs, lens = batch.sig
        return self.modules.model(wavs, lens, batch.prompt)

    def training_targets(self, batch):
        """The ``[batch, 4]`` target distribution used while training."""
        raise NotImplementedError

    def on_fit_batch_start(self, batch, should_step):
        """Seed the step's augmentation and dropout draws by (seed, epoch,
        step), so that a run resumed from a mid-epoch checkpoint
        (``ckpt_interval_steps``) repeats the uninterrupted run exactly.
        """
        _seed_all((self.hparams.seed * 1000 + self.epoch) * 100_003 + self.step)
        beta = self.options.ma_beta
        if should_step and beta:
            if self._averaged is None:
                self._averaged = [
                    t
                    for t in self.modules.state_dict().values()
                    if t.is_floating_point()
                ]
                self._previous = [t.clone() for t in self._averaged]
            torch._foreach_copy_(self._previous, self._averaged)

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        """With ``ma_beta``, move every weight and batch-norm statistic back
        toward its value before the step: ``beta * old + (1 - beta) * new``
        (the reference BTS / AST training's ``--ma_update``).
        """
        beta = self.options.ma_beta
        if should_step and beta:
            torch._foreach_lerp_(self._averaged, self._previous, beta)

    def _wrap_distributed(self):
        # SpeechBrain 1.1 turns BatchNorm into SyncBatchNorm, which has no
        # CPU kernel: under torchrun on CPU (gloo), wrap in DDP without it.
        if not (self.distributed_launch and self.device == "cpu"):
            return super()._wrap_distributed()
        for name, module in self.modules.items():
            if any(p.requires_grad for p in module.parameters()):
                self.modules[name] = DistributedDataParallel(
                    module, find_unused_parameters=self.find_unused_parameters
                )

    @staticmethod
    def labels(batch):
        """The batch's hard labels, ``[batch]`` int64."""
        return batch.target.data.flatten().long()

    def compute_objectives(self, logits, batch, stage):
        """Cross-entropy against the training targets, or the hard labels
        when evaluating; accumulates the ICBHI metric.
        """
        labels = self.labels(batch)
        if stage == sb.Stage.TRAIN:
            targets = self.training_targets(batch)
        else:
            targets = torch.nn.functional.one_hot(labels, N_CLASSES)
        loss = soft_cross_entropy(logits, targets.to(logits.device).float())
        self.stats.append(batch.id, logits, labels)
        return loss

    def on_stage_start(self, stage, epoch=None):
        """Fresh metric; at train time, the epoch's seed and learning rate."""
        self.stats = ICBHIStats()
        if stage == sb.Stage.TRAIN:
            # Seeding per epoch makes the loader's worker seeds the same
            # whether or not the run was interrupted before this epoch.
            _seed_all(self.hparams.seed * 1000 + epoch)
            self.epoch = epoch
            lr = self.options.lr_schedule(epoch)
            sb.nnet.schedulers.update_learning_rate(self.optimizer, lr)

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Log the stage; after validation, checkpoint by Score."""
        stats = {"loss": stage_loss, **self.stats.summarize()}
        if stage == sb.Stage.TRAIN:
            self.train_stats = stats
            return
        train_logger = self.options.train_logger
        if stage == sb.Stage.VALID:
            lr = self.optimizer.param_groups[0]["lr"]
            if train_logger is not None:
                split = self.options.selection_split
                train_logger.log_stats(
                    stats_meta={"epoch": epoch, "lr": lr},
                    train_stats=self.train_stats,
                    **{f"{split}_stats": stats},
                )
            self.checkpointer.save_and_keep_only(
                meta=self.selection_meta(stats, epoch),
                importance_keys=[selection_rank],
                ckpt_predicate=is_selection_checkpoint,
            )
        else:
            self.test_stats = self.stats
            counter = getattr(self.hparams, "epoch_counter", None)
            meta = {"epoch loaded": getattr(counter, "current", None)}
            if train_logger is not None:
                train_logger.log_stats(stats_meta=meta, test_stats=stats)

    def selection_meta(self, stats, epoch):
        """What ranks this epoch's checkpoint (see :func:`selection_rank`).

        ``eligible``: the Score is a number and Se is above
        ``best_min_se`` (the reference keeps a new best only if Se > 5).
        """
        score, se = float(stats["score"]), float(stats["se"])
        min_se = self.options.best_min_se
        eligible = not math.isnan(score) and (min_se is None or se > min_se)
        if not eligible and not math.isnan(score):
            logger.info(
                "Se %.2f is not above best_min_se %s: this epoch ranks "
                "below every epoch that is",
                se,
                min_se,
            )
        return {"score": score, "se": se, "epoch": epoch, "eligible": eligible}

    def on_evaluate_start(self, max_key=None, min_key=None):
        """Load the selected checkpoint (:func:`selection_rank`) and keep
        how it was chosen in :attr:`selection` (recorded in the bank).

        Raises
        ------
        NoTrainingError
            If there is no checkpoint, or the selected one was saved before
            any optimizer step: its model was never trained.
        """
        if self.checkpointer is None or max_key or min_key:
            return super().on_evaluate_start(max_key, min_key)
        ckpt = self.checkpointer.recover_if_possible(
            importance_key=selection_rank,
            ckpt_predicate=is_selection_checkpoint,
        )
        folder = self.checkpointer.checkpoints_dir
        if ckpt is None or self.optimizer_step == 0:
            raise NoTrainingError(
                f"no trained checkpoint in {folder}: "
                + ("none was saved" if ckpt is None else "it took no step")
                + "; the run took no optimizer step, so there is nothing "
                "to evaluate (see the train log)"
            )
        self.selection = selection_record(
            ckpt.meta, self.options, self.optimizer_step
        )
        if not self.selection["eligible"]:
            logger.warning(
                "%s: kept epoch %s", self.selection["rule"], ckpt.meta["epoch"]
            )

    @torch.no_grad()
    def collect_logits(self, dataset):
        """Run the model in eval mode over ``dataset``.

        Returns
        -------
        ICBHIStats
            Holding every cycle's ID, logits and label.
        """
        loader_opts = {**self.options.test_loader_kwargs, "ckpt_prefix": None}
        loader = self.make_dataloader(dataset, sb.Stage.TEST, **loader_opts)
        self.modules.eval()
        stats = ICBHIStats()
        with self.evaluation_ctx:
            for batch in loader:
                logits = self.compute_forward(batch, sb.Stage.TEST)
                stats.append(batch.id, logits, self.labels(batch))
        return stats

    def logit_bank(self, datasets, info):
        """The model's logits on each split, as a :class:`LogitBank`.

        Arguments
        ---------
        datasets : dict
            Split name -> dataset.
        info : dict
            Facts to store (backbone, seed, epoch, ...); the metrics of
            every split are added.
        """
        ids, logits, labels, metrics = {}, {}, {}, {}
        for split, dataset in datasets.items():
            stats = self.collect_logits(dataset)
            ids[split] = stats.ids
            logits[split] = (
                torch.cat(stats.logits) if stats.logits else torch.zeros(0, 4)
            )
            labels[split] = (
                torch.cat(stats.targets)
                if stats.targets
                else torch.zeros(0, dtype=torch.long)
            )
            metrics[split] = stats.summarize()
        info = {**info, "metrics": metrics}
        return LogitBank(ids, logits, labels, info)


class TeacherBrain(RSCBrain):
    """Trains on the hard labels."""

    def training_targets(self, batch):
        """One-hot labels."""
        return torch.nn.functional.one_hot(self.labels(batch), N_CLASSES)


class DistillBrain(RSCBrain):
    """Trains on soft targets from a teacher bank, looked up by cycle ID.

    Arguments
    ---------
    soft_labels : speechbrain_rsc.distillation.SoftLabels
        Maps ``(ids, labels, epoch)`` to targets. Only the modes that
        declare ``uses_hard_labels`` are given the labels.
    *args, **kwargs
        As for :class:`speechbrain.Brain`.
    """

    def __init__(self, soft_labels, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.soft_labels = soft_labels

    def training_targets(self, batch):
        """The soft targets of the batch's cycles for this epoch."""
        labels = self.labels(batch).cpu()
        if not self.soft_labels.uses_hard_labels:
            labels = None
        return self.soft_labels(batch.id, labels, self.epoch)

    def check_loss_isfinite(self, loss):
        """Turn SpeechBrain's non-finite-loss error into
        :class:`TrainingDiverged`, which distill.py reports.
        """
        try:
            super().check_loss_isfinite(loss)
        except ValueError as error:
            raise TrainingDiverged(str(error)) from error


class EnsembleModel(torch.nn.Module):
    """k trained members evaluated together; returns their mean logits.

    Arguments
    ---------
    members : list of torch.nn.Module
        Backbones taking ``(wavs, lens, prompts)``, all at one sample rate.

    Example
    -------
    >>> class Const(torch.nn.Module):
    ...     def __init__(self, v):
    ...         super().__init__()
    ...         self.v = torch.tensor(v)
    ...     def forward(self, wavs, lens=None, prompts=None):
    ...         return self.v.expand(len(wavs), -1)
    >>> ens = EnsembleModel([Const([1.0, 0, 0, 0]), Const([0.0, 0, 0, 3])])
    >>> ens(torch.zeros(1, 8)).tolist()
    [[0.5, 0.0, 0.0, 1.5]]
    """

    def __init__(self, members):
        super().__init__()
        rates = {getattr(m, "sample_rate", None) for m in members}
        if len(rates) > 1:
            raise ValueError(
                f"ensemble members disagree on sample rate: {rates}"
            )
        self.members = torch.nn.ModuleList(members)
        self.sample_rate = rates.pop()

    def member_logits(self, wavs, lens=None, prompts=None):
        """Each member's logits, ``[k, batch, 4]``."""
        return torch.stack([m(wavs, lens, prompts) for m in self.members])

    def forward(self, wavs, lens=None, prompts=None):
        """Mean logits of the members."""
        return mean_logits(self.member_logits(wavs, lens, prompts))

    @classmethod
    def from_folders(cls, folders, map_location="cpu"):
        """Load the members from trained-model folders
        (:mod:`speechbrain_rsc.trained_model`).
        """
        return cls([load_trained(f, map_location)[0] for f in folders])


class EnsembleBrain(RSCBrain):
    """Evaluates an ensemble model (:class:`EnsembleModel`, or the faster
    :class:`~speechbrain_rsc.fused.FusedEnsemble` that
    :func:`~speechbrain_rsc.fused.make_ensemble` builds) with
    ``evaluate()`` and writes its logits as a bank; it is never trained.
    """

    def fit(self, *args, **kwargs):
        """Ensembles are made of trained members; there is nothing to fit."""
        raise RuntimeError("EnsembleBrain evaluates trained members only")
