#!/usr/bin/env python3
"""Data preparation for the ICBHI 2017 respiratory sound database.

Cuts every annotated respiratory cycle once (resampled, faded and
standardised to a fixed duration, as the Patch-Mix CL / BTS pipeline does),
caches it as a float32 WAV, and writes ``train.csv``, ``valid.csv`` and
``test.csv`` manifests plus ``summary.json`` (counts, renamed recordings,
recordings missing from disk and every skipped cycle with its reason) in
``<save_folder>/manifests_<key>/``, where the key identifies the data (by
content) and the options; it prints their paths. One save folder can hold
the preparations of several data folders or option sets.

Download (official): https://bhichallenge.med.auth.gr/ (ICBHI_final_database
and the challenge train/test split). The Kaggle re-upload works too, given
the official split file with ``--split_file``.

To run on its own::

    python icbhi_prepare.py --data_folder /data/ICBHI --save_folder prepared

The training scripts call ``prepare_icbhi`` themselves.

Authors
 * speechbrain-rsc contributors 2026
"""

import argparse
import logging

from speechbrain_rsc.data.prepare import prepare_icbhi
from speechbrain_rsc.errors import reported_errors

__all__ = ["prepare_icbhi"]


def main(argv=None):
    """Command line for ``prepare_icbhi``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_folder", required=True)
    parser.add_argument("--save_folder", required=True)
    parser.add_argument("--sample_rate", type=int, default=16000)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--pad", choices=("repeat", "zero"), default="repeat")
    parser.add_argument("--valid_fraction", type=float, default=0.15)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--split_file", default=None)
    parser.add_argument(
        "--overrun", choices=("clamp", "skip"), default="skip"
    )  # a cycle ending past its recording: clamp (the reference) or skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    outputs = prepare_icbhi(**vars(args))
    for name, path in outputs.items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    with reported_errors():
        main()
