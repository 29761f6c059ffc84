#!/usr/bin/env python3
"""Evaluate logit-averaging ensembles X++[k] from a folder of banks.

Works the same for teachers (``results/cnn6``) and for distilled students
(second generation X-d++[k], e.g. ``results/cnn6-d/cnn6_mean_k5``).

To run (from recipes/ICBHI)::

    python ensemble.py results/cnn6 --k 5
    python ensemble.py results/cnn6 --seeds 1 4 7
    python ensemble.py results/cnn6 --k 5 --curate_on valid
    python ensemble.py results/cnn6 --sweep --out results/cnn6_sweep.csv
    python ensemble.py results/cnn6 --k 5 \
        --manifest results/prepared/manifests_<key>/test.csv
    python ensemble.py results/cnn6 --k 5 --audio other/manifests_<key>/test.csv

"First k" means the k smallest seeds. One ensemble is also scored per
recording device and per chest location (``--out x.csv`` adds
``x_by_device.csv`` and ``x_by_location.csv``). Banks that hold different
cycles, or a bank that does not match the given manifest, are refused.
Each Sp, Se and Score comes with its 95 % interval from ``--bootstrap``
(default 1000) resamples of the test patients (``--bootstrap_seed``; the
``--out`` CSV's ``sp_lo`` ... ``score_hi``), and the ECE (percent, 15
bins) and Brier score of the softmax of the mean logits.
``--audio`` scores the chosen runs' exported models on the cycles of any
prepared manifest (e.g. another site's recordings) as one fused ensemble,
instead of reading their banks.

Authors
 * speechbrain-rsc contributors 2026
"""

import argparse
import os
import sys

from speechbrain_rsc.audio_ensemble import evaluate_models
from speechbrain_rsc.bank import (
    check_k,
    find_banks,
    read_manifest,
    select_banks,
)
from speechbrain_rsc.breakdown import markdown_table
from speechbrain_rsc.ensemble import (
    bank_breakdown,
    evaluate_banks,
    sweep,
    write_csv,
)
from speechbrain_rsc.errors import EXIT_STATUS, RecipeError

CALIBRATION = ("ece", "brier")


def positive_int(text):
    """``--k``: a positive integer, refused with the message of
    :func:`~speechbrain_rsc.bank.check_k`.

    Example
    -------
    >>> positive_int("3")
    3
    """
    try:
        return check_k(int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"k must be a positive integer (1, 2, ...), not {text!r}"
        ) from None


def parse_args(argv):
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bank_folder", help="folder of <run>/bank.safetensors")
    parser.add_argument(
        "--k", type=positive_int, help="first k seeds (default: all)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", help="explicit seeds")
    parser.add_argument(
        "--curate_on",
        choices=["valid", "test"],
        help="take the top k by this split's Score (curated ensemble)",
    )
    parser.add_argument("--split", default="test", help="split to score")
    parser.add_argument("--manifest", help="check banks against this CSV")
    parser.add_argument(
        "--sweep", action="store_true", help="score every k = 1..N"
    )
    parser.add_argument("--out", help="write the result rows to this CSV")
    parser.add_argument(
        "--audio",
        help="score the runs' exported models on this prepared CSV",
    )
    parser.add_argument("--device", help="for --audio (default: cuda if any)")
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=1000,
        help="patient resamples for the 95%% intervals (0: none)",
    )
    parser.add_argument(
        "--bootstrap_seed", type=int, default=0, help="seed of the resamples"
    )
    return parser.parse_args(argv)


def _score(args):
    """The result rows and, for one ensemble scored from its banks, its
    breakdown per device and location (else ``{}``).
    """
    banks = find_banks(args.bank_folder)
    if args.manifest:
        ids, _ = read_manifest(args.manifest)
        for bank in banks:
            bank.check_manifest(args.split, ids)
    boot = {"bootstrap": args.bootstrap, "bootstrap_seed": args.bootstrap_seed}
    if args.sweep:
        return sweep(banks, args.split, curate_on=args.curate_on, **boot), {}
    chosen = select_banks(
        banks, k=args.k, seeds=args.seeds, curate_on=args.curate_on
    )
    seeds = " ".join(str(b.info.get("seed")) for b in chosen)
    breakdown = {}
    if args.audio:
        result = evaluate_models(chosen, args.audio, args.device, **boot)
    else:
        result = evaluate_banks(chosen, args.split, **boot)
        breakdown = bank_breakdown(
            chosen, args.split, args.bootstrap, args.bootstrap_seed
        )
    return [{"k": len(chosen), "seeds": seeds, **result}], breakdown


def main(argv=None):
    """Print (and optionally save) the ensemble Score(s)."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.audio and args.sweep:
        sys.exit("--audio scores one ensemble: choose it with --k or --seeds")
    try:
        rows, breakdown = _score(args)
    except (RecipeError, ValueError, FileNotFoundError) as error:
        # Refused banks, selection or manifest: the message names what to
        # change, alone, with the exit status of the other scripts' refusals.
        print(f"ensemble.py: {error}", file=sys.stderr, flush=True)
        sys.exit(EXIT_STATUS)
    print("| k | seeds | Sp | Se | Score | ECE | Brier |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        # "63.54 [61.20, 65.90]": the 95 % patient-bootstrap interval
        cells = [
            f"{row[m]:.2f}"
            + (
                f" [{row[m + '_lo']:.2f}, {row[m + '_hi']:.2f}]"
                if m + "_lo" in row
                else ""
            )
            for m in ("sp", "se", "score")
        ]
        cells += [f"{row[m]:.3g}" if m in row else "" for m in CALIBRATION]
        print(f"| {row['k']} | {row['seeds']} | " + " | ".join(cells) + " |")
    if args.out:
        write_csv(rows, args.out)
    if not args.sweep and not args.audio:
        # One Score hides the device shift of ICBHI's test split.
        for by, table in breakdown.items():
            print(f"\n{args.split} Sp/Se/Score per {by}:")
            print(markdown_table(table))
            if args.out:
                stem, ext = os.path.splitext(args.out)
                write_csv(table.to_dict("records"), f"{stem}_by_{by}{ext}")
    return rows


if __name__ == "__main__":
    main()
