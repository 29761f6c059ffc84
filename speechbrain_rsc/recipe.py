"""The steps every ICBHI recipe script shares: experiment folder, data,
training with checkpoint selection, and the exported bank and model.

Kept here so that train_teacher.py and distill.py each read as the method
they implement.
"""

import logging
import os

import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.distributed import run_on_main

from speechbrain_rsc.bank import BANK_FILENAME
from speechbrain_rsc.dataio import dataio_prep, resolve_data_folder
from speechbrain_rsc.export import save_trained

logger = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
SELECT_ON = ("valid", "test")


def load_experiment(argv):
    """Parse ``script.py hparams.yaml [--key value ...]`` and create the
    experiment folder.

    Returns
    -------
    hparams : dict
    run_opts : dict
    """
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    sb.utils.distributed.ddp_init_group(run_opts)  # no-op without torchrun
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )
    if hparams["select_on"] not in SELECT_ON:
        raise ValueError(
            f"select_on must be one of {SELECT_ON}, not {hparams['select_on']}"
        )
    return hparams, run_opts


def prepare_datasets(hparams):
    """Make (if asked) and prepare the ICBHI data; return the datasets.

    Returns
    -------
    dict
        ``train``, ``valid`` and ``test`` DynamicItemDatasets.
    """
    from speechbrain_rsc.data.prepare import prepare_icbhi

    data_folder = resolve_data_folder(
        hparams["data_folder"],
        hparams["synthetic_folder"],
        recordings=hparams["synthetic_recordings"],
    )
    run_on_main(
        prepare_icbhi,
        kwargs={
            "data_folder": data_folder,
            "save_folder": hparams["prepare_folder"],
            "sample_rate": hparams["sample_rate"],
            "duration": hparams["duration"],
            "pad": hparams["pad"],
            "valid_fraction": hparams["valid_fraction"],
            "seed": hparams["split_seed"],
            "split_file": hparams["split_file"],
        },
    )
    manifests = {
        split: os.path.join(hparams["prepare_folder"], f"{split}.csv")
        for split in SPLITS
    }
    return dataio_prep(manifests, hparams["sample_rate"])


def selection_set(hparams, datasets):
    """The split whose Score picks the checkpoint.

    ``select_on: valid`` (default) uses the patient-disjoint validation
    split; ``select_on: test`` reproduces the paper's protocol (best test
    Score), which overstates the test Score.
    """
    if hparams["select_on"] == "test":
        logger.warning(
            "select_on: test -- checkpoints are chosen on the TEST set, as "
            "in the paper; the test Score is then optimistic"
        )
        return datasets["test"]
    if len(datasets["valid"]) == 0:
        raise ValueError(
            "the validation split is empty (valid_fraction 0): set "
            "valid_fraction > 0 or select_on: test"
        )
    return datasets["valid"]


def fit(brain, datasets, hparams):
    """Train, validating every epoch on the selection split."""
    brain.fit(
        brain.hparams.epoch_counter,
        datasets["train"],
        selection_set(hparams, datasets),
        # SpeechBrain writes into these dicts: give it copies.
        train_loader_kwargs=dict(hparams["train_dataloader_opts"]),
        valid_loader_kwargs=dict(hparams["test_dataloader_opts"]),
    )


def evaluate_and_export(brain, datasets, hparams, info):
    """Evaluate the selected checkpoint on test, then write the run's logit
    bank and trained model into ``output_folder``.

    Arguments
    ---------
    brain : speechbrain_rsc.brains.RSCBrain
    datasets : dict
        ``train``, ``valid`` and ``test`` datasets.
    hparams : dict
    info : dict
        Facts stored with the bank and model (backbone, seed, role, ...).

    Returns
    -------
    speechbrain_rsc.bank.LogitBank
    """
    brain.evaluate(
        datasets["test"],
        max_key="score",
        test_loader_kwargs=dict(hparams["test_dataloader_opts"]),
    )
    info = {
        **info,
        "epoch": brain.hparams.epoch_counter.current,
        "select_on": hparams["select_on"],
        "duration": hparams["duration"],
        "pad": hparams["pad"],
    }
    bank = brain.logit_bank(datasets, info)
    if sb.utils.distributed.if_main_process():
        bank.save(os.path.join(hparams["output_folder"], BANK_FILENAME))
        save_trained(
            brain.modules.model,
            os.path.join(hparams["output_folder"], "model"),
            bank.info,
        )
        logger.info(
            "test Sp %.2f Se %.2f Score %.2f (epoch %s, selected on %s)",
            *(bank.info["metrics"]["test"][k] for k in ("sp", "se", "score")),
            info["epoch"],
            hparams["select_on"],
        )
    return bank
