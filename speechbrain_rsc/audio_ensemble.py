"""Ensembles X++[k] evaluated on audio: the members' exported models,
fused into one model, run over a prepared manifest by an
:class:`~speechbrain_rsc.brains.EnsembleBrain`; for cycles no bank
holds (banks are scored by :mod:`speechbrain_rsc.ensemble`).
"""

from pathlib import Path

import torch

from speechbrain_rsc.brains import EnsembleBrain
from speechbrain_rsc.dataio import dataio_prep
from speechbrain_rsc.fused import make_ensemble
from speechbrain_rsc.trained_model import CONFIG_FILE, load_trained
from speechbrain_rsc.uncertainty import summary


def evaluate_models(
    banks, manifest, device=None, batch_size=16, bootstrap=0, bootstrap_seed=0
):
    """ICBHI Sp/Se/Score of the ensemble of the models behind ``banks``,
    run on the audio of a prepared ``manifest``.

    Each bank's run folder must hold the model it exported
    (``<run>/model``); the members are evaluated as one
    :func:`~speechbrain_rsc.fused.make_ensemble` by an
    :class:`~speechbrain_rsc.brains.EnsembleBrain`. On cycles a bank also
    holds, the result equals
    :func:`~speechbrain_rsc.ensemble.evaluate_banks` (to float rounding).

    Arguments
    ---------
    banks : list of LogitBank
        Loaded from files (their ``source`` locates the runs).
    manifest : str or Path
        A prepared CSV at the members' sample rate.
    device : str, optional
        CUDA when present, else CPU.
    batch_size : int
    bootstrap, bootstrap_seed : int
        As :func:`~speechbrain_rsc.ensemble.evaluate_banks`.

    Raises
    ------
    FileNotFoundError
        Naming a run without an exported model.
    """
    folders = [Path(bank.source).parent / "model" for bank in banks]
    for folder in folders:
        if not (folder / CONFIG_FILE).is_file():
            raise FileNotFoundError(
                f"{folder}: no exported model ({CONFIG_FILE}) beside the "
                "bank; models are exported by train_teacher.py and distill.py"
            )
    members = [load_trained(folder)[0] for folder in folders]
    model = make_ensemble(members)
    dataset = dataio_prep({"audio": manifest}, model.sample_rate)["audio"]
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    brain = EnsembleBrain(
        modules={"model": model},
        hparams={"test_dataloader_opts": {"batch_size": batch_size}},
        run_opts={"device": device, "noprogressbar": True},
    )
    stats = brain.collect_logits(dataset)
    result = stats.summarize()
    if bootstrap and stats.logits and result["score"] == result["score"]:
        logits, labels = torch.cat(stats.logits), torch.cat(stats.targets)
        result = summary(stats.ids, logits, labels, bootstrap, bootstrap_seed)
    return result
