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

import speechbrain as sb

from speechbrain_rsc.brains import TeacherBrain
from speechbrain_rsc.recipe import (
    evaluate_and_export,
    fit,
    load_hparams,
    prepare_data,
    start_run,
)

if __name__ == "__main__":
    hparams_file, run_opts, overrides = sb.parse_arguments(sys.argv[1:])
    sb.utils.distributed.ddp_init_group(run_opts)  # no-op without torchrun
    hparams = load_hparams(hparams_file, overrides)
    data = prepare_data(hparams)
    # Refuses a folder whose checkpoints were made from other data.
    provenance = {"data": data.identity}
    start_run(hparams_file, overrides, hparams, provenance)

    brain = TeacherBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    fit(brain, data, hparams)
    evaluate_and_export(
        brain,
        data,
        hparams,
        info={
            "role": "teacher",
            "backbone": hparams["backbone"],
            "seed": hparams["seed"],
        },
        provenance=provenance,
    )
