#!/usr/bin/env python3
"""Distill a teacher ensemble into one student with soft labels.

The paper's method: the student never sees the hard labels; its targets
are built every epoch from the teachers' logits, looked up in their banks
by cycle ID (``teacher_mode``: mean, random, single, curated,
teacher_noise, raw_logits; and the baselines noise and hard).

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

import speechbrain as sb

from speechbrain_rsc.bank import read_manifest, stack_logits
from speechbrain_rsc.brains import DistillBrain, TrainingDiverged
from speechbrain_rsc.distillation import build_soft_labels, select_teachers
from speechbrain_rsc.provenance import teacher_identity
from speechbrain_rsc.recipe import (
    evaluate_and_export,
    fit,
    load_hparams,
    prepare_data,
    start_run,
)

logger = logging.getLogger(__name__)


def soft_labels_for(hparams, teachers, train_csv):
    """Check the teachers against the student's manifest and build the
    training targets.
    """
    train_ids, _ = read_manifest(train_csv)
    teacher_logits = None
    if teachers:
        for bank in teachers:
            bank.check_manifest("train", train_ids)
        teacher_logits = stack_logits(teachers, "train", train_ids)
        logger.info(
            "%s teacher from %s",
            hparams["teacher_mode"],
            ", ".join(b.name for b in teachers),
        )
    options = {}
    if hparams["teacher_mode"] == "noise":
        options["variance"] = hparams["noise_variance"]
    return build_soft_labels(
        hparams["teacher_mode"],
        train_ids,
        teacher_logits,
        seed=hparams["seed"],
        **options,
    )


if __name__ == "__main__":
    hparams_file, run_opts, overrides = sb.parse_arguments(sys.argv[1:])
    sb.utils.distributed.ddp_init_group(run_opts)  # no-op without torchrun
    hparams = load_hparams(hparams_file, overrides)
    data = prepare_data(hparams)
    teachers = select_teachers(
        hparams["teacher_bank"],
        hparams["teacher_mode"],
        hparams["k"],
        seeds=hparams["teacher_seeds"],
        curate_on=hparams["curate_on"],
        backbone=hparams["teacher_backbone"],
    )
    soft_labels = soft_labels_for(hparams, teachers, data.manifests["train"])
    # Refuses a folder whose checkpoints were made from other data or
    # other teachers.
    provenance = {"data": data.identity, "teachers": teacher_identity(teachers)}
    start_run(hparams_file, overrides, hparams, provenance)

    brain = DistillBrain(
        soft_labels,
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    info = {
        "role": "student",
        "backbone": hparams["backbone"],
        "seed": hparams["seed"],
        "teacher_mode": hparams["teacher_mode"],
        "teacher_backbone": hparams["teacher_backbone"] if teachers else None,
        "teacher_seeds": [b.info.get("seed") for b in teachers],
        "converged": True,
    }
    try:
        fit(brain, data, hparams)
    except TrainingDiverged as error:
        # The paper's raw-logits ablation "fails to converge": report the
        # best checkpoint kept before divergence instead of crashing.
        logger.warning("training diverged: %s", error)
        info["converged"] = False
    evaluate_and_export(brain, data, hparams, info, provenance)
