#!/usr/bin/env python3
"""Distill a teacher ensemble into one student with soft labels.

The paper's method: the student never sees the hard labels; its targets
are built every epoch from the teachers' logits, looked up in their banks
by cycle ID. The YAML's ``targets`` object says how (its knob
``teacher_mode``: mean, random, single, curated, teacher_noise,
raw_logits; and the baselines noise and hard).

To run (from recipes/ICBHI), after training teachers with seeds 1..5::

    python distill.py hparams/distill_cnn6.yaml --k 5
    python distill.py hparams/distill_cnn6.yaml --teacher_mode random --k 3

The student writes its own bank, so ``ensemble.py`` evaluates
second-generation ensembles X-d++[k] from the students' folder.

Authors
 * speechbrain-rsc contributors 2026
"""

import logging
import sys

from hyperpyyaml import load_hyperpyyaml
from speechbrain_rsc.bank import read_manifest, stack_logits
from speechbrain_rsc.brains import BrainOptions, DistillBrain, TrainingDiverged
from speechbrain_rsc.errors import reported_errors
from speechbrain_rsc.provenance import teacher_identity
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

logger = logging.getLogger(__name__)


def soft_labels_for(targets, teachers, train_csv, seed):
    """Check the teachers against the student's manifest and build the
    per-batch soft labels of ``targets``.
    """
    train_ids, _ = read_manifest(train_csv)
    teacher_logits = None
    if teachers:
        for bank in teachers:
            bank.check_manifest("train", train_ids)
        teacher_logits = stack_logits(teachers, "train", train_ids)
        logger.info(
            "%s teacher from %s",
            targets.mode,
            ", ".join(b.name for b in teachers),
        )
    return targets.soft_labels(train_ids, teacher_logits, seed=seed)


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
        targets = hparams["targets"]
        teachers = targets.select_teachers(
            hparams["teacher_bank"],
            curate_on=protocol.select_on,
            backbone=hparams["teacher_backbone"],
        )
        # Cheap checks first (the teachers above, then the folder's
        # record): nothing is fetched or prepared for a run that is refused.
        teacher_record = teacher_identity(teachers)
        refuse_other_run(
            hparams["output_folder"],
            hparams_file,
            overrides,
            teachers=teacher_record,
        )
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
        soft_labels = soft_labels_for(
            targets, teachers, data.manifests["train"], seed=hparams["seed"]
        )
        # Refuses a folder whose checkpoints were made from other data or
        # other teachers.
        provenance = {"data": data.identity, "teachers": teacher_record}
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

        brain = DistillBrain(
            soft_labels,
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
        info = {
            "role": "student",
            "backbone": hparams["backbone"],
            "seed": hparams["seed"],
            "protocol": protocol.name,
            "select_on": protocol.select_on,
            "duration": hparams["duration"],
            "pad": hparams["pad"],
            "targets": targets.describe(),
            "teacher_backbone": hparams["teacher_backbone"]
            if teachers
            else None,
            "teacher_seeds": [b.info.get("seed") for b in teachers],
            "converged": True,
        }
        try:
            fit(
                brain,
                hparams["epoch_counter"],
                data,
                protocol,
                hparams["train_dataloader_opts"],
            )
        except TrainingDiverged as error:
            # The paper's raw-logits ablation "fails to converge": report the
            # best checkpoint kept before divergence instead of crashing.
            logger.warning("training diverged: %s", error)
            info["converged"] = False
        evaluate_and_export(
            brain,
            data,
            hparams["output_folder"],
            info,
            provenance,
            bootstrap=hparams["bootstrap"],
            bootstrap_seed=hparams["bootstrap_seed"],
        )
