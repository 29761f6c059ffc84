"""The steps every ICBHI recipe script shares: experiment folder, data,
training with checkpoint selection, and the exported bank and model.

Kept here so that train_teacher.py and distill.py each read as the method
they implement.
"""

import json
import logging
import os
from dataclasses import dataclass

import speechbrain as sb
import yaml
from hyperpyyaml import load_hyperpyyaml, resolve_references
from speechbrain.utils.distributed import run_on_main

from speechbrain_rsc.bank import BANK_FILENAME
from speechbrain_rsc.dataio import dataio_prep, resolve_data_folder
from speechbrain_rsc.export import save_trained
from speechbrain_rsc.provenance import check_run, data_identity, record_run

logger = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
# protocol -> the split that selects checkpoints and ranks teachers
PROTOCOLS = {"validation": "valid", "paper": "test"}


def load_hparams(hparams_file, overrides):
    """Load the recipe YAML with its command-line overrides and apply its
    ``protocol``. Nothing is written yet.
    """
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    return apply_protocol(hparams)


def apply_protocol(hparams):
    """Set what the evaluation ``protocol`` decides, in place.

    ``validation``: the checkpoint is selected, and curated teachers are
    ranked, on a patient-disjoint validation split of ``valid_fraction``
    of the train patients. ``paper``: the whole official train split
    trains (``valid_fraction`` 0) and the test split selects checkpoints
    and ranks curated teachers, as the paper and its code did.

    Adds ``select_on`` and ``curate_on`` (the split name) to ``hparams``.

    Example
    -------
    >>> h = apply_protocol({"protocol": "paper", "valid_fraction": 0.15})
    >>> h["valid_fraction"], h["select_on"], h["curate_on"]
    (0.0, 'test', 'test')
    """
    protocol = hparams["protocol"]
    if protocol not in PROTOCOLS:
        raise ValueError(
            f"protocol must be one of {', '.join(PROTOCOLS)}, not {protocol!r}"
        )
    if protocol == "paper":
        hparams["valid_fraction"] = 0.0
    split = PROTOCOLS[protocol]
    hparams["select_on"] = hparams["curate_on"] = split
    return hparams


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


def prepare_data(hparams):
    """Make (if asked) and prepare the ICBHI data; return the datasets.

    Under DDP the main process prepares and the others then read what it
    wrote (the preparation returns at once when it is done).

    Returns
    -------
    PreparedData
    """
    from speechbrain_rsc.data.prepare import prepare_icbhi

    data_folder = resolve_data_folder(
        hparams["data_folder"],
        hparams["synthetic_folder"],
        recordings=hparams["synthetic_recordings"],
    )
    options = {
        "data_folder": data_folder,
        "save_folder": hparams["prepare_folder"],
        "sample_rate": hparams["sample_rate"],
        "duration": hparams["duration"],
        "pad": hparams["pad"],
        "valid_fraction": hparams["valid_fraction"],
        "seed": hparams["split_seed"],
        "split_file": hparams["split_file"],
    }
    outputs = {}
    run_on_main(lambda: outputs.update(prepare_icbhi(**options)))
    if not outputs:  # a DDP process other than the main one
        outputs = prepare_icbhi(**options)
    manifests = {split: outputs[split] for split in SPLITS}
    with open(outputs["summary"], encoding="utf-8") as f:
        summary = json.load(f)
    return PreparedData(
        datasets=dataio_prep(manifests, hparams["sample_rate"]),
        manifests=manifests,
        identity=data_identity(manifests, outputs["summary"]),
        summary=summary,
    )


def start_run(hparams_file, overrides, hparams, provenance):
    """Refuse a run folder made from other inputs, then create it.

    The check comes first, so a refused run leaves the folder as it was.

    Arguments
    ---------
    hparams_file : str
        The recipe YAML (copied into the folder).
    overrides : str
        The command-line overrides (saved with it).
    hparams : dict
    provenance : dict
        What this run is made from (see :mod:`speechbrain_rsc.provenance`).
    """
    folder = hparams["output_folder"]
    resumed = check_run(folder, provenance)
    sb.create_experiment_directory(
        experiment_directory=folder,
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )
    if sb.utils.distributed.if_main_process():
        record_run(folder, provenance)
    data = provenance["data"]
    logger.info(
        "%s run in %s: data %s (%s cycles train/valid/test)",
        "resuming the" if resumed else "new",
        folder,
        data["key"],
        "/".join(str(data["cycles"][s]["count"]) for s in SPLITS),
    )


def selection_set(hparams, data):
    """The split whose Score picks the checkpoint (see
    :func:`apply_protocol`).
    """
    if hparams["select_on"] == "test":
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


def fit(brain, data, hparams):
    """Train, validating every epoch on the selection split."""
    brain.fit(
        brain.hparams.epoch_counter,
        data.datasets["train"],
        selection_set(hparams, data),
        # SpeechBrain writes into these dicts: give it copies.
        train_loader_kwargs=dict(hparams["train_dataloader_opts"]),
        valid_loader_kwargs=dict(hparams["test_dataloader_opts"]),
    )


def evaluate_and_export(brain, data, hparams, info, provenance):
    """Evaluate the selected checkpoint on test, then write the run's logit
    bank and trained model into ``output_folder``.

    A model whose logits are not finite on some split is recorded with
    ``converged: False`` (its Scores are NaN, never those of an argmax
    over NaN).

    Arguments
    ---------
    brain : speechbrain_rsc.brains.RSCBrain
    data : PreparedData
    hparams : dict
    info : dict
        Facts stored with the bank and model (backbone, seed, role, ...).
    provenance : dict
        What the run was made from, stored with the bank.

    Returns
    -------
    speechbrain_rsc.bank.LogitBank
    """
    brain.evaluate(
        data.datasets["test"],
        max_key="score",
        test_loader_kwargs=dict(hparams["test_dataloader_opts"]),
    )
    info = {
        **info,
        "epoch": brain.hparams.epoch_counter.current,
        "protocol": hparams["protocol"],
        "select_on": hparams["select_on"],
        "duration": hparams["duration"],
        "pad": hparams["pad"],
        "provenance": provenance,
        "parameters": sum(p.numel() for p in brain.modules.model.parameters()),
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
        bank.save(os.path.join(hparams["output_folder"], BANK_FILENAME))
        save_trained(
            brain.modules.model,
            os.path.join(hparams["output_folder"], "model"),
            bank.info,
        )
        test = bank.info["metrics"]["test"]
        logger.info(
            "test Sp %.2f Se %.2f Score %.2f (epoch %s, selected on %s)",
            *(test[k] for k in ("sp", "se", "score")),
            info["epoch"],
            hparams["select_on"],
        )
    return bank
