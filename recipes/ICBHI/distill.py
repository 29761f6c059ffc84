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

from speechbrain_rsc.bank import (
    find_banks,
    read_manifest,
    select_banks,
    stack_logits,
)
from speechbrain_rsc.brains import DistillBrain, TrainingDiverged
from speechbrain_rsc.distillation import TEACHER_MODES, build_soft_labels
from speechbrain_rsc.recipe import (
    evaluate_and_export,
    fit,
    load_experiment,
    prepare_datasets,
)

logger = logging.getLogger(__name__)


def select_teachers(hparams):
    """The teacher banks the mode asks for (none for noise and hard)."""
    mode = hparams["teacher_mode"]
    selection = TEACHER_MODES[mode][1] if mode in TEACHER_MODES else None
    if selection is None:
        return []
    banks = find_banks(hparams["teacher_bank"])
    if selection == "single":
        return select_banks(banks, k=1, seeds=hparams["teacher_seeds"])[:1]
    if selection == "curated":
        return select_banks(
            banks, k=hparams["k"], curate_on=hparams["curate_on"]
        )
    return select_banks(banks, k=hparams["k"], seeds=hparams["teacher_seeds"])


def soft_labels_for(hparams, train_csv):
    """Check the teachers against the student's manifest and build the
    training targets.
    """
    train_ids, _ = read_manifest(train_csv)
    teachers = select_teachers(hparams)
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
    soft_labels = build_soft_labels(
        hparams["teacher_mode"],
        train_ids,
        teacher_logits,
        seed=hparams["seed"],
        **options,
    )
    return soft_labels, [b.info.get("seed") for b in teachers]


if __name__ == "__main__":
    hparams, run_opts = load_experiment(sys.argv[1:])
    datasets = prepare_datasets(hparams)
    train_csv = f"{hparams['prepare_folder']}/train.csv"
    soft_labels, teacher_seeds = soft_labels_for(hparams, train_csv)

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
        "teacher_backbone": hparams["teacher_backbone"],
        "teacher_seeds": teacher_seeds,
    }
    info["converged"] = True
    try:
        fit(brain, datasets, hparams)
    except TrainingDiverged as error:
        # The paper's raw-logits ablation "fails to converge": report the
        # best checkpoint kept before divergence instead of crashing.
        logger.warning("training diverged: %s", error)
        info["converged"] = False
    evaluate_and_export(brain, datasets, hparams, info)
