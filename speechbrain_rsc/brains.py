"""The Brain classes: one per way of training, sharing everything else.

- :class:`TeacherBrain` trains on hard labels (the paper's teachers);
- :class:`DistillBrain` trains on the soft targets of a teacher bank;
- :class:`EnsembleBrain` evaluates k trained members as one model
  (``ensemble.py --audio``).

All of them forward ``(wavs, lens, prompts)`` through ``modules.model``,
log Sp/Se/Score per epoch, keep the checkpoint with the best selection
Score, and can write their logits as a bank.

The hparams each Brain reads: ``seed``, ``lr_schedule`` (epoch -> rate),
``train_logger``, ``epoch_counter``, ``test_dataloader_opts`` and,
optionally, ``channels_last`` (convolution weights and activations in
NHWC, faster for the CNN backbones on CPU and GPU).

On CUDA the data loaders pin their batches (unless ``pin_memory`` is given)
and batches are copied to the device without blocking.
"""

import logging
import math
import random

import numpy as np
import speechbrain as sb
import torch
from torch.nn.parallel import DistributedDataParallel

from speechbrain_rsc.bank import LogitBank, mean_logits
from speechbrain_rsc.data.schema import N_CLASSES
from speechbrain_rsc.distillation import soft_cross_entropy
from speechbrain_rsc.metrics import ICBHIStats

logger = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss stayed non-finite: the run did not converge."""


class RSCBrain(sb.Brain):
    """Shared forward, metrics, selection and logit export."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if getattr(self.hparams, "channels_last", False):
            self.modules.to(memory_format=torch.channels_last)

    def make_dataloader(
        self, dataset, stage, ckpt_prefix="dataloader-", **loader_kwargs
    ):
        """SpeechBrain's loader, pinning host memory when on CUDA."""
        if str(self.device).startswith("cuda"):
            loader_kwargs.setdefault("pin_memory", True)
        return super().make_dataloader(
            dataset, stage, ckpt_prefix, **loader_kwargs
        )

    def compute_forward(self, batch, stage):
        """Logits ``[batch, 4]`` of the batch's cycles."""
        batch = batch.to(self.device, non_blocking=True)
        wavs, lens = batch.sig
        return self.modules.model(wavs, lens, batch.prompt)

    def training_targets(self, batch):
        """The ``[batch, 4]`` target distribution used while training."""
        raise NotImplementedError

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
            # Seeding per epoch makes augmentation and dropout draws the
            # same whether or not the run was interrupted before this epoch.
            # (Not seed_everything: it would also reseed the data sampler.)
            epoch_seed = self.hparams.seed * 1000 + epoch
            random.seed(epoch_seed)
            np.random.seed(epoch_seed)
            torch.manual_seed(epoch_seed)
            self.epoch = epoch
            lr = self.hparams.lr_schedule(epoch)
            sb.nnet.schedulers.update_learning_rate(self.optimizer, lr)

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Log the stage; after validation, checkpoint by Score."""
        stats = {"loss": stage_loss, **self.stats.summarize()}
        if stage == sb.Stage.TRAIN:
            self.train_stats = stats
            return
        train_logger = getattr(self.hparams, "train_logger", None)
        if stage == sb.Stage.VALID:
            lr = self.optimizer.param_groups[0]["lr"]
            if train_logger is not None:
                train_logger.log_stats(
                    stats_meta={"epoch": epoch, "lr": lr},
                    train_stats=self.train_stats,
                    valid_stats=stats,
                )
            score = stats["score"]
            self.checkpointer.save_and_keep_only(
                meta={
                    "score": -1.0 if math.isnan(score) else score,
                    "epoch": epoch,
                },
                max_keys=["score"],
            )
        else:
            self.test_stats = self.stats
            counter = getattr(self.hparams, "epoch_counter", None)
            meta = {"epoch loaded": getattr(counter, "current", None)}
            if train_logger is not None:
                train_logger.log_stats(stats_meta=meta, test_stats=stats)

    @torch.no_grad()
    def collect_logits(self, dataset):
        """Run the model in eval mode over ``dataset``.

        Returns
        -------
        ICBHIStats
            Holding every cycle's ID, logits and label.
        """
        loader_opts = getattr(self.hparams, "test_dataloader_opts", {})
        loader_opts = {**loader_opts, "ckpt_prefix": None}
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
        """Load the members from trained-model folders (see export.py)."""
        from speechbrain_rsc.export import load_trained

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
