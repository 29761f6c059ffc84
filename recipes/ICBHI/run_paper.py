#!/usr/bin/env python3
"""Run the whole paper: data, teachers, ensembles, students, report.

Stages, each resumable (a run whose bank exists is skipped):

1. data: the built-in synthetic dataset (``data_folder: synthetic``) or an
   ICBHI folder, prepared once per sample rate;
2. teachers: ``train_teacher.py`` for every teacher seed;
3. students: ``distill.py`` for every teacher mode, k and student seed;
4. report: Tables 1-3, the k sweep, Figures 2-3 and the confusion matrix
   of the best student, in ``<output_folder>/report``.

To run (from recipes/ICBHI)::

    python run_paper.py hparams/paper_demo.yaml
    python run_paper.py hparams/paper_icbhi.yaml --data_folder /data/ICBHI

Authors
 * speechbrain-rsc contributors 2026
"""

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import speechbrain as sb
import yaml
from hyperpyyaml import load_hyperpyyaml

from speechbrain_rsc.bank import BANK_FILENAME, find_banks
from speechbrain_rsc.ensemble import sweep, write_csv
from speechbrain_rsc.report import write_report

HERE = os.path.dirname(os.path.abspath(__file__))


def flag_args(options):
    """``{"k": 5}`` -> ``["--k", "5"]`` (values as one-line YAML)."""
    args = []
    for key, value in options.items():
        text = yaml.safe_dump(value, default_flow_style=True, width=10**6)
        args += [f"--{key}", text.strip().removesuffix("...").strip()]
    return args


def run(script, hparams_file, output_folder, options, label, threads):
    """Run one recipe script unless its bank already exists."""
    if os.path.isfile(os.path.join(output_folder, BANK_FILENAME)):
        print(f"  [skip] {label}: done ({output_folder})", flush=True)
        return
    start = time.time()
    print(f"  [run ] {label} -> {output_folder}", flush=True)
    command = [sys.executable, script, hparams_file]
    command += flag_args({**options, "output_folder": output_folder})
    command.append("--noprogressbar")
    log = os.path.join(os.path.dirname(output_folder), "run_paper.log")
    os.makedirs(os.path.dirname(log), exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    with open(log, "a", encoding="utf-8") as out:
        result = subprocess.run(
            command, cwd=HERE, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    if result.returncode != 0:
        raise RuntimeError(
            f"{label} failed (exit {result.returncode}); see {log}"
        )
    print(f"  [done] {label} in {time.time() - start:.0f} s", flush=True)


def student_runs(hparams):
    """(mode, k) pairs: mean and random for every k, then the variants.

    With k = 1 the mean, random and single teachers give the same targets,
    so only the mean run is made (the report reads it as all three).
    """
    runs = [("mean", k) for k in hparams["ks"]]
    runs += [("random", k) for k in hparams["ks"] if k > 1]
    runs += [(mode, hparams["variant_k"]) for mode in hparams["variants"]]
    return runs


def run_all(jobs, n_jobs):
    """Run ``jobs`` (argument tuples of :func:`run`), ``n_jobs`` at a time."""
    threads = max(1, (os.cpu_count() or 1) // n_jobs)
    with ThreadPoolExecutor(max_workers=n_jobs) as pool:
        futures = [pool.submit(run, *job, threads) for job in jobs]
        for future in futures:
            future.result()


def main(argv):
    """Run every stage of the configured paper reproduction."""
    hparams_file, _, overrides = sb.parse_arguments(argv)
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    root = os.path.abspath(hparams["output_folder"])
    backbone = hparams["backbone"]
    shared = {
        "data_folder": hparams["data_folder"],
        "synthetic_folder": os.path.join(root, "synthetic_icbhi"),
        "synthetic_recordings": hparams["synthetic_recordings"],
        "prepare_folder": os.path.join(root, "prepared", backbone),
        **hparams["overrides"],
    }
    teacher_yaml = os.path.join(HERE, hparams["teacher_hparams"])
    student_yaml = os.path.join(HERE, hparams["student_hparams"])
    teachers_root = os.path.join(root, backbone)
    started = time.time()

    seeds = hparams["teacher_seeds"]
    print(f"[1/3] teachers: {backbone}, seeds {seeds}", flush=True)
    teacher_jobs = [
        (
            os.path.join(HERE, "train_teacher.py"),
            teacher_yaml,
            os.path.join(teachers_root, str(seed)),
            {**shared, "seed": seed},
            f"teacher {i}/{len(seeds)} (seed {seed})",
        )
        for i, seed in enumerate(seeds, 1)
    ]
    # The first run prepares the data; the others then find it done.
    run_all(teacher_jobs[:1], 1)
    run_all(teacher_jobs[1:], hparams["jobs"])

    runs = [
        (mode, k, seed)
        for mode, k in student_runs(hparams)
        for seed in hparams["student_seeds"]
    ]
    print(f"[2/3] students: {len(runs)} runs", flush=True)
    student_jobs = [
        (
            os.path.join(HERE, "distill.py"),
            student_yaml,
            os.path.join(
                root, f"{backbone}-d", f"{backbone}_{mode}_k{k}", str(seed)
            ),
            {
                **shared,
                "seed": seed,
                "teacher_mode": mode,
                "k": k,
                "teacher_bank": teachers_root,
            },
            f"student {i}/{len(runs)} ({mode}, k={k}, seed {seed})",
        )
        for i, (mode, k, seed) in enumerate(runs, 1)
    ]
    run_all(student_jobs, hparams["jobs"])

    print("[3/3] report", flush=True)
    report_folder = os.path.join(root, "report")
    os.makedirs(report_folder, exist_ok=True)
    write_csv(
        sweep(find_banks(teachers_root)),
        os.path.join(report_folder, f"ensemble_sweep_{backbone}.csv"),
    )
    report = write_report(root, report_folder, backbones=[backbone])
    print(f"report: {report} ({time.time() - started:.0f} s in all)")


if __name__ == "__main__":
    main(sys.argv[1:])
