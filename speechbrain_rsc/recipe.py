"""The steps every ICBHI recipe script shares: the evaluation protocol,
data, the experiment folder, training with checkpoint selection, and the
exported bank and model.

Kept here so that train_teacher.py and distill.py each read as the method
they implement. Every function takes its options as arguments; the scripts
read them from their YAML.
"""

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import speechbrain as sb
import yaml
from hyperpyyaml import resolve_references
from speechbrain.utils.distributed import run_on_main

from speechbrain_rsc.bank import BANK_FILENAME, LogitBank
from speechbrain_rsc.brains import NoTrainingError
from speechbrain_rsc.dataio import SYNTHETIC, dataio_prep, resolve_data_folder
from speechbrain_rsc.ensemble import bank_breakdown, evaluate_banks
from speechbrain_rsc.errors import OptionError
from speechbrain_rsc.export import save_trained
from speechbrain_rsc.hashing import sha256_file
from speechbrain_rsc.provenance import (
    check_run,
    data_identity,
    record_run,
    run_identity,
)
from speechbrain_rsc.run_lock import lock_run_folder
from speechbrain_rsc.trained_model import WEIGHTS_FILE

logger = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class Protocol:
    """The evaluation protocol: what trains, what selects, what ranks.

    ``validation``: the checkpoint is selected, and curated teachers are
    ranked, on a patient-disjoint validation split of ``valid_fraction`` of
    the train patients. ``paper``: the whole official train split trains
    (``valid_fraction`` 0) and the test split selects checkpoints and ranks
    curated teachers, as the paper and its code did.

    Example
    -------
    >>> Protocol.named("paper", valid_fraction=0.15)
    Protocol(name='paper', valid_fraction=0.0, select_on='test')
    >>> Protocol.named("validation", 0.15).select_on
    'valid'
    """

    name: str
    valid_fraction: float
    select_on: str  # the split that selects checkpoints and ranks teachers

    @classmethod
    def named(cls, name, valid_fraction):
        """The protocol ``name`` (``validation`` or ``paper``)."""
        if name == "validation":
            return cls(name, float(valid_fraction), "valid")
        if name == "paper":
            return cls(name, 0.0, "test")
        raise OptionError(f"protocol must be validation or paper, not {name!r}")


def read_plain_hparams(hparams_file, overrides=None):
    """The YAML's plain values (numbers, strings, lists) with ``overrides``
    applied and references resolved, without building any object (those
    read as None): what ``run_paper.py`` needs to know of a run before
    starting it.

    Arguments
    ---------
    hparams_file : str
    overrides : dict or str, optional
        As a dict, or the YAML text of SpeechBrain's command line.

    Returns
    -------
    dict
    """

    class PlainLoader(yaml.SafeLoader):
        pass

    PlainLoader.add_multi_constructor("!", lambda loader, tag, node: None)
    if isinstance(overrides, str):  # as sb.parse_arguments returns them
        text = overrides
    else:
        text = yaml.safe_dump(overrides or {})
    with open(hparams_file, encoding="utf-8") as fin:
        resolved = resolve_references(fin, text).getvalue()
    return yaml.load(resolved, Loader=PlainLoader)


@dataclass
class PreparedData:
    """The datasets of one preparation and what identifies it."""

    datasets: dict  # split -> DynamicItemDataset
    manifests: dict  # split -> CSV path
    identity: dict  # provenance.data_identity
    summary: dict  # the preparation's summary.json


def prepare_data(
    data_folder,
    prepare_folder,
    sample_rate,
    duration,
    pad,
    valid_fraction,
    split_seed,
    split_file=None,
    synthetic_folder=None,
    synthetic_recordings=60,
    prompt_location="recording",
    prompt_metadata_file=None,
    overrun="skip",
):
    """Make (if asked) and prepare the ICBHI data; return the datasets.

    Under DDP the main process prepares and the others then read what it
    wrote (the preparation returns at once when it is done).

    Arguments
    ---------
    data_folder : str
        An ICBHI folder, or ``"synthetic"`` for the built-in dataset.
    prepare_folder : str
        Where cycles and manifests go (keyed by what they are made from,
        so one folder may serve many runs).
    sample_rate, duration, pad, valid_fraction, split_seed, split_file
        As for :func:`speechbrain_rsc.data.prepare.prepare_icbhi`.
    prompt_location, prompt_metadata_file
        Its ``prompt_location`` and ``prompt_metadata_file``.
    overrun : str
        Its ``overrun``: ``"clamp"`` (the reference's) or ``"skip"``.
    synthetic_folder : str, optional
        Where the synthetic dataset is made (``data_folder: synthetic``).
    synthetic_recordings : int
        Its size.

    Returns
    -------
    PreparedData
    """
    from speechbrain_rsc.data.prepare import prepare_icbhi

    options = {
        "data_folder": resolve_data_folder(
            data_folder, synthetic_folder, recordings=synthetic_recordings
        ),
        "save_folder": prepare_folder,
        "sample_rate": sample_rate,
        "duration": duration,
        "pad": pad,
        "valid_fraction": valid_fraction,
        "seed": split_seed,
        "split_file": split_file,
        "prompt_location": prompt_location,
        "prompt_metadata_file": prompt_metadata_file,
        "overrun": overrun,
    }
    outputs = {}
    run_on_main(lambda: outputs.update(prepare_icbhi(**options)))
    if not outputs:  # a DDP process other than the main one
        outputs = prepare_icbhi(**options)
    manifests = {split: outputs[split] for split in SPLITS}
    with open(outputs["summary"], encoding="utf-8") as f:
        summary = json.load(f)
    return PreparedData(
        datasets=dataio_prep(manifests, sample_rate),
        manifests=manifests,
        identity={
            **data_identity(manifests, outputs["summary"]),
            # what the model card calls the data (never "ICBHI" for ours)
            "dataset": "synthetic"
            if str(data_folder) == SYNTHETIC
            else "ICBHI",
        },
        summary=summary,
    )


def refuse_other_run(output_folder, hparams_file, overrides, **known):
    """Before any expensive step (fetching weights, preparing data),
    refuse ``output_folder`` if the run recorded there differs in what is
    known already: the options that define the run and, for a student,
    ``teachers`` (:func:`~speechbrain_rsc.provenance.teacher_identity`).
    :func:`claim_run_folder` checks everything again once the data is
    prepared.

    Raises
    ------
    speechbrain_rsc.provenance.ProvenanceMismatch
        Naming each difference.
    """
    current = {
        "run": run_identity(read_plain_hparams(hparams_file, overrides)),
        **known,
    }
    check_run(output_folder, current, keys=tuple(current))


def check_backbone(backbone, model):
    """Refuse a YAML whose ``backbone`` (the name its banks, folders and
    report rows carry) is not the model it builds.

    Example
    -------
    >>> from speechbrain_rsc.models.cnn6 import CNN6
    >>> check_backbone("cnn6", CNN6(channels=[4, 8, 8, 8]))
    >>> check_backbone("ast", CNN6(channels=[4, 8, 8, 8]))
    Traceback (most recent call last):
    ...
    speechbrain_rsc.errors.OptionError: backbone: ast, but the model is a \
speechbrain_rsc.models.cnn6.CNN6 ('cnn6'): set backbone: cnn6, or build \
the model of 'ast'
    """
    name = getattr(model, "backbone_name", None)
    if name != backbone:
        cls = type(model)
        raise OptionError(
            f"backbone: {backbone}, but the model is a {cls.__module__}."
            f"{cls.__qualname__} ({name!r}): set backbone: {name}, or build "
            f"the model of {backbone!r}"
        )


def claim_run_folder(hparams_file, overrides, output_folder, provenance):
    """Lock the run folder and refuse it if it was made from other inputs
    or with other options; nothing is written but the lock.

    The script then creates the experiment folder itself
    (``sb.create_experiment_directory``, which archives the calling
    script, as SpeechBrain recipes do) and calls :func:`record_run_start`.

    Arguments
    ---------
    hparams_file : str
        The recipe YAML.
    overrides : str
        The command-line overrides.
    output_folder : str
    provenance : dict
        What this run is made from (see :mod:`speechbrain_rsc.provenance`);
        its ``run`` entry (what defines the run) is added here from the
        YAML and the overrides.

    Returns
    -------
    bool
        Whether the folder holds this run already (a resume).
    """
    if sb.utils.distributed.if_main_process():
        lock_run_folder(output_folder)
    provenance["run"] = run_identity(
        read_plain_hparams(hparams_file, overrides)
    )
    return check_run(output_folder, provenance)


def record_run_start(output_folder, provenance, resumed):
    """Write the run's ``provenance.json`` and log what it starts from.

    Arguments
    ---------
    output_folder : str
    provenance : dict
        As checked by :func:`claim_run_folder`.
    resumed : bool
        What :func:`claim_run_folder` returned.
    """
    if sb.utils.distributed.if_main_process():
        record_run(output_folder, provenance)
    data = provenance["data"]
    logger.info(
        "%s run in %s: data %s (%s cycles train/valid/test)",
        "resuming the" if resumed else "new",
        output_folder,
        data["key"],
        "/".join(str(data["cycles"][s]["count"]) for s in SPLITS),
    )


def log_weights(model):
    """Say where the model's weights start from (the bank records it too):
    a run on random weights is never mistaken for a pretrained one.
    """
    source = getattr(model, "weights_source", None)
    if source is None:
        logger.warning("training from RANDOM weights (use_pretrained False)")
    else:
        logger.info(
            "training from pretrained weights %s (%s, revision %s, sha256 %s)",
            source["source"],
            source["kind"],
            source.get("revision"),
            source.get("sha256"),
        )


def selection_set(protocol, data):
    """The dataset whose Score picks the checkpoint (see
    :class:`Protocol`).
    """
    if protocol.select_on == "test":
        logger.warning(
            "protocol: paper -- checkpoints are chosen on the TEST set, as "
            "in the paper; the test Score is then optimistic"
        )
        return data.datasets["test"]
    if len(data.datasets["valid"]) == 0:
        raise OptionError(
            f"the validation split is empty: {empty_valid_reason(data)}; "
            "set protocol: paper to select on the test split instead"
        )
    return data.datasets["valid"]


def empty_valid_reason(data):
    """Why a preparation has no validation cycle, from its summary."""
    fraction = data.summary["options"]["valid_fraction"]
    if fraction == 0:
        return "valid_fraction is 0"
    patients = data.summary["splits"]["train"]["patients"]
    return (
        f"valid_fraction is {fraction} but the train split has only "
        f"{patients} patient(s), and one must stay in train"
    )


def steps_per_epoch(n_cycles, batch_size, drop_last):
    """Optimizer steps one epoch of ``n_cycles`` takes.

    Example
    -------
    >>> steps_per_epoch(100, 128, drop_last=True)
    0
    >>> steps_per_epoch(100, 128, drop_last=False)
    1
    """
    if drop_last:
        return n_cycles // batch_size
    return math.ceil(n_cycles / batch_size)


def check_training_runs(n_epochs, n_cycles, train_loader_kwargs):
    """Refuse a run that would take no optimizer step.

    Raises
    ------
    NoTrainingError
        For fewer than one epoch, or a train split smaller than one batch
        with ``drop_last`` (every batch dropped).
    """
    if not isinstance(n_epochs, int) or n_epochs < 1:
        raise NoTrainingError(
            f"number_of_epochs is {n_epochs!r}: a run needs at least one "
            "epoch to train anything"
        )
    batch_size = train_loader_kwargs.get("batch_size", 1)
    drop_last = bool(train_loader_kwargs.get("drop_last", False))
    if steps_per_epoch(n_cycles, batch_size, drop_last) == 0:
        raise NoTrainingError(
            f"the train split has {n_cycles} cycles, fewer than one batch "
            f"of batch_size {batch_size} with drop_last: every batch would "
            f"be dropped and nothing trained; set --batch_size to at most "
            f"{n_cycles} (or drop_last: False)"
        )


def fit(brain, epoch_counter, data, protocol, train_loader_kwargs):
    """Train, validating every epoch on the protocol's selection split.

    Arguments
    ---------
    brain : speechbrain_rsc.brains.RSCBrain
    epoch_counter : speechbrain.utils.epoch_loop.EpochCounter
    data : PreparedData
    protocol : Protocol
    train_loader_kwargs : dict

    Raises
    ------
    NoTrainingError
        Before any work, if the run would take no optimizer step.
    """
    check_training_runs(
        epoch_counter.limit, len(data.datasets["train"]), train_loader_kwargs
    )
    brain.fit(
        epoch_counter,
        data.datasets["train"],
        selection_set(protocol, data),
        # SpeechBrain writes into these dicts: give it copies.
        train_loader_kwargs=dict(train_loader_kwargs),
        valid_loader_kwargs=dict(brain.options.test_loader_kwargs),
    )


def evaluate_and_export(
    brain, data, output_folder, info, provenance, bootstrap=0, bootstrap_seed=0
):
    """Evaluate the selected checkpoint on test, then write the run's
    trained model and, last, its logit bank into ``output_folder``.

    The bank marks the run complete (``run_paper.py`` skips a run that has
    one): any earlier bank is removed before the model is written, and the
    new bank records the SHA-256 of the model it was computed with
    (:func:`run_is_complete`), so a crash in between never leaves a bank
    beside a model of another epoch.

    A model whose logits are not finite on some split is recorded with
    ``converged: False`` (its Scores are NaN, never those of an argmax
    over NaN).

    Arguments
    ---------
    brain : speechbrain_rsc.brains.RSCBrain
    data : PreparedData
    output_folder : str
    info : dict
        Facts stored with the bank and model (backbone, seed, role,
        protocol, ...).
    provenance : dict
        What the run was made from, stored with the bank.
    bootstrap, bootstrap_seed : int
        Patient resamples (and their seed) of the 95 % intervals, ECE and
        Brier recorded for the test and valid splits and shown on the
        model card (0: none).

    Returns
    -------
    speechbrain_rsc.bank.LogitBank
    """
    brain.evaluate(
        data.datasets["test"],
        test_loader_kwargs=dict(brain.options.test_loader_kwargs),
    )
    model = brain.modules.model
    weights = getattr(getattr(model, "module", model), "weights_source", None)
    info = {
        **info,
        "epoch": brain.hparams.epoch_counter.current,
        "selection": brain.selection,
        "provenance": provenance,
        "parameters": sum(p.numel() for p in model.parameters()),
        # where the training started from: None for random weights
        "weights": weights,
    }
    bank = brain.logit_bank(data.datasets, info)
    finite = all(bool(x.isfinite().all()) for x in bank.logits.values())
    bank.info["converged"] = info.get("converged", True) and finite
    if not finite:
        logger.warning(
            "the selected model gives non-finite logits: recorded as not "
            "converged, its Scores are NaN"
        )
    if bootstrap and finite:
        for split in ("test", "valid"):
            if bank.ids.get(split):
                bank.info["metrics"][split] = evaluate_banks(
                    [bank], split, bootstrap, bootstrap_seed
                )
    if sb.utils.distributed.if_main_process():
        bank_path = Path(output_folder) / BANK_FILENAME
        bank_path.unlink(missing_ok=True)
        model_folder = Path(output_folder) / "model"
        save_trained(
            model,
            model_folder,
            bank.info,
            per_device=bank_breakdown(
                [bank],
                bootstrap=bootstrap if finite else 0,
                seed=bootstrap_seed,
            )["device"],
        )
        bank.info["model_sha256"] = sha256_file(model_folder / WEIGHTS_FILE)
        bank.save(bank_path)
        test = bank.info["metrics"]["test"]
        logger.info(
            "test Sp %.2f Se %.2f Score %.2f (epoch %s, selected on %s)",
            *(test[k] for k in ("sp", "se", "score")),
            info["epoch"],
            info.get("select_on"),
        )
    return bank


def run_is_complete(folder):
    """Whether a run folder holds a bank and the very model it was
    computed with (the bank is written last, see
    :func:`evaluate_and_export`).

    Returns
    -------
    tuple of (bool, str)
        Complete or not, and why not.
    """
    folder = Path(folder)
    bank_path = folder / BANK_FILENAME
    if not bank_path.is_file():
        return False, f"{bank_path} does not exist"
    weights = folder / "model" / WEIGHTS_FILE
    if not weights.is_file():
        return False, f"{weights} does not exist"
    recorded = LogitBank.open(bank_path).info.get("model_sha256")
    if recorded != sha256_file(weights):
        return False, (
            f"{bank_path} was computed with another model than {weights} "
            "(an export cut short)"
        )
    return True, ""
