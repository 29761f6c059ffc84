"""The steps every ICBHI recipe script shares: the evaluation protocol,
data, the experiment folder, training with checkpoint selection, and the
exported bank and model.

Kept here so that train_teacher.py and distill.py each read as the method
they implement. Every function takes its options as arguments; the scripts
read them from their YAML.
"""

import json
import logging
import os
from dataclasses import dataclass

import speechbrain as sb
import yaml
from hyperpyyaml import resolve_references
from speechbrain.utils.distributed import run_on_main

from speechbrain_rsc.bank import BANK_FILENAME
from speechbrain_rsc.breakdown import bank_breakdown
from speechbrain_rsc.dataio import dataio_prep, resolve_data_folder
from speechbrain_rsc.export import save_trained
from speechbrain_rsc.provenance import check_run, data_identity, record_run

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
        raise ValueError(f"protocol must be validation or paper, not {name!r}")


def read_plain_hparams(hparams_file, overrides=None):
    """The YAML's plain values (numbers, strings, lists) with ``overrides``
    applied and references resolved, without building any object (those
    read as None): what ``run_paper.py`` needs to know of a run before
    starting it.

    Arguments
    ---------
    hparams_file : str
    overrides : dict, optional

    Returns
    -------
    dict
    """

    class PlainLoader(yaml.SafeLoader):
        pass

    PlainLoader.add_multi_constructor("!", lambda loader, tag, node: None)
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
        identity=data_identity(manifests, outputs["summary"]),
        summary=summary,
    )


def start_run(hparams_file, overrides, output_folder, provenance):
    """Refuse a run folder made from other inputs, then create it.

    The check comes first, so a refused run leaves the folder as it was.

    Arguments
    ---------
    hparams_file : str
        The recipe YAML (copied into the folder).
    overrides : str
        The command-line overrides (saved with it).
    output_folder : str
    provenance : dict
        What this run is made from (see :mod:`speechbrain_rsc.provenance`).
    """
    resumed = check_run(output_folder, provenance)
    sb.create_experiment_directory(
        experiment_directory=output_folder,
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )
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
        raise ValueError(
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


def fit(brain, epoch_counter, data, protocol, train_loader_kwargs):
    """Train, validating every epoch on the protocol's selection split.

    Arguments
    ---------
    brain : speechbrain_rsc.brains.RSCBrain
    epoch_counter : speechbrain.utils.epoch_loop.EpochCounter
    data : PreparedData
    protocol : Protocol
    train_loader_kwargs : dict
    """
    brain.fit(
        epoch_counter,
        data.datasets["train"],
        selection_set(protocol, data),
        # SpeechBrain writes into these dicts: give it copies.
        train_loader_kwargs=dict(train_loader_kwargs),
        valid_loader_kwargs=dict(brain.options.test_loader_kwargs),
    )


def evaluate_and_export(brain, data, output_folder, info, provenance):
    """Evaluate the selected checkpoint on test, then write the run's logit
    bank and trained model into ``output_folder``.

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

    Returns
    -------
    speechbrain_rsc.bank.LogitBank
    """
    brain.evaluate(
        data.datasets["test"],
        max_key="score",
        test_loader_kwargs=dict(brain.options.test_loader_kwargs),
    )
    model = brain.modules.model
    weights = getattr(getattr(model, "module", model), "weights_source", None)
    info = {
        **info,
        "epoch": brain.hparams.epoch_counter.current,
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
    if sb.utils.distributed.if_main_process():
        bank.save(os.path.join(output_folder, BANK_FILENAME))
        save_trained(
            model,
            os.path.join(output_folder, "model"),
            bank.info,
            per_device=bank_breakdown([bank])["device"],
        )
        test = bank.info["metrics"]["test"]
        logger.info(
            "test Sp %.2f Se %.2f Score %.2f (epoch %s, selected on %s)",
            *(test[k] for k in ("sp", "se", "score")),
            info["epoch"],
            info.get("select_on"),
        )
    return bank
