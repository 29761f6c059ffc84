#!/usr/bin/env python3
"""Train one ICBHI teacher on hard labels and write its logit bank.

The first half of the paper: k teachers of one backbone, trained with
different seeds, later averaged into an ensemble (ensemble.py) and
distilled into a student (distill.py).

To run (from recipes/ICBHI)::

    python train_teacher.py hparams/cnn6.yaml --seed 7
    python train_teacher.py hparams/bts.yaml --data_folder /data/ICBHI

``data_folder: synthetic`` (the default) uses the built-in synthetic
ICBHI-format dataset. The run writes, in ``results/<backbone>/<seed>``,
the usual SpeechBrain log and checkpoints, ``bank.safetensors`` (logits of
every train/valid/test cycle by cycle ID) and ``model/`` (the selected
checkpoint, for inference and ensembles).

Authors
 * speechbrain-rsc contributors 2026
"""

import sys

from hyperpyyaml import load_hyperpyyaml
from speechbrain_rsc.brains import BrainOptions, TeacherBrain
from speechbrain_rsc.errors import reported_errors
from speechbrain_rsc.recipe import (
    Protocol,
    check_backbone,
    claim_run_folder,
    evaluate_and_export,
    fit,
    log_weights,
    prepare_data,
    record_run_start,
    refuse_other_run,
)

import speechbrain as sb
from speechbrain.utils.distributed import run_on_main

if __name__ == "__main__":
    # Our refusals print their message and exit 2 (RSC_DEBUG=1: traceback)
    with reported_errors():
        hparams_file, run_opts, overrides = sb.parse_arguments(sys.argv[1:])
        sb.utils.distributed.ddp_init_group(run_opts)  # no-op without torchrun
        with open(hparams_file, encoding="utf-8") as fin:
            hparams = load_hyperpyyaml(fin, overrides)
        check_backbone(hparams["backbone"], hparams["model"])
        protocol = Protocol.named(
            hparams["protocol"], hparams["valid_fraction"]
        )
        # Cheap checks first: a folder of another run is refused before
        # any download or preparation.
        refuse_other_run(hparams["output_folder"], hparams_file, overrides)
        # The pretrained weights the YAML declares: fetched (main process
        # first), or an error saying how to get them.
        run_on_main(hparams["pretrainer"].collect_files)
        hparams["pretrainer"].load_collected()

        data = prepare_data(
            data_folder=hparams["data_folder"],
            prepare_folder=hparams["prepare_folder"],
            sample_rate=hparams["sample_rate"],
            duration=hparams["duration"],
            pad=hparams["pad"],
            valid_fraction=protocol.valid_fraction,
            split_seed=hparams["split_seed"],
            split_file=hparams["split_file"],
            prompt_location=hparams["prompt_location"],
            prompt_metadata_file=hparams["prompt_metadata_file"],
            overrun=hparams["overrun"],
            synthetic_folder=hparams["synthetic_folder"],
            synthetic_recordings=hparams["synthetic_recordings"],
        )
        # Refuses a folder whose checkpoints were made from other data.
        provenance = {"data": data.identity}
        resumed = claim_run_folder(
            hparams_file, overrides, hparams["output_folder"], provenance
        )
        sb.create_experiment_directory(
            experiment_directory=hparams["output_folder"],
            hyperparams_to_save=hparams_file,
            overrides=overrides,
        )
        record_run_start(hparams["output_folder"], provenance, resumed)
        log_weights(hparams["modules"]["model"])

        brain = TeacherBrain(
            modules=hparams["modules"],
            opt_class=hparams["opt_class"],
            hparams=hparams,
            run_opts=run_opts,
            checkpointer=hparams["checkpointer"],
            options=BrainOptions(
                lr_schedule=hparams["lr_schedule"],
                train_logger=hparams["train_logger"],
                test_loader_kwargs=hparams["test_dataloader_opts"],
                channels_last=hparams.get("channels_last", False),
                ma_beta=hparams["ma_beta"],
                best_min_se=hparams["best_min_se"],
                cuda_precision=hparams["cuda_precision"],
                selection_split=protocol.select_on,
            ),
        )
        fit(
            brain,
            hparams["epoch_counter"],
            data,
            protocol,
            hparams["train_dataloader_opts"],
        )
        evaluate_and_export(
            brain,
            data,
            hparams["output_folder"],
            info={
                "role": "teacher",
                "backbone": hparams["backbone"],
                "seed": hparams["seed"],
                "protocol": protocol.name,
                "select_on": protocol.select_on,
                "duration": hparams["duration"],
                "pad": hparams["pad"],
            },
            provenance=provenance,
            bootstrap=hparams["bootstrap"],
            bootstrap_seed=hparams["bootstrap_seed"],
        )
