#!/usr/bin/env python3
"""Run the whole paper: data, teachers, ensembles, students, report.

Stages, each resumable: a finished run (its bank exists) is skipped, but
only if its ``provenance.json`` says it was made from the same prepared
data and, for a student, the same teacher banks; otherwise run_paper stops
and names what differs.

1. data: the built-in synthetic dataset (``data_folder: synthetic``) or an
   ICBHI folder, prepared once before any run starts;
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
from speechbrain_rsc.dataio import SYNTHETIC
from speechbrain_rsc.distillation import select_teachers
from speechbrain_rsc.ensemble import sweep, write_csv
from speechbrain_rsc.provenance import check_run, teacher_identity
from speechbrain_rsc.recipe import (
    Protocol,
    prepare_data,
    read_plain_hparams,
)
from speechbrain_rsc.report import write_report

HERE = os.path.dirname(os.path.abspath(__file__))
# The hparams that decide which prepared data a run reads.
PREPARE_KEYS = (
    "data_folder",
    "synthetic_folder",
    "synthetic_recordings",
    "prepare_folder",
    "split_file",
    "sample_rate",
    "duration",
    "pad",
    "valid_fraction",
    "protocol",
    "split_seed",
)


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


def run_hparams(hparams_file, output_folder, options):
    """The plain hparams a run will see (no object is built)."""
    return read_plain_hparams(
        hparams_file, {**options, "output_folder": output_folder}
    )


def prepare_run_data(plain):
    """Prepare the data a run of plain hparams ``plain`` will read, as its
    script does.
    """
    protocol = Protocol.named(plain["protocol"], plain["valid_fraction"])
    return prepare_data(
        data_folder=plain["data_folder"],
        prepare_folder=plain["prepare_folder"],
        sample_rate=plain["sample_rate"],
        duration=plain["duration"],
        pad=plain["pad"],
        valid_fraction=protocol.valid_fraction,
        split_seed=plain["split_seed"],
        split_file=plain["split_file"],
        synthetic_folder=plain["synthetic_folder"],
        synthetic_recordings=plain["synthetic_recordings"],
    )


def check_finished(job, prepared):
    """Refuse to skip a finished run made from other data or teachers.

    Arguments
    ---------
    job : tuple
        The arguments of :func:`run`.
    prepared : callable
        Plain hparams -> :class:`~speechbrain_rsc.recipe.PreparedData`.
    """
    script, hparams_file, output_folder, options, _ = job
    if not os.path.isfile(os.path.join(output_folder, BANK_FILENAME)):
        return
    hparams = run_hparams(hparams_file, output_folder, options)
    provenance = {"data": prepared(hparams).identity}
    if os.path.basename(script) == "distill.py":
        teachers = select_teachers(
            hparams["teacher_bank"],
            hparams["teacher_mode"],
            hparams["k"],
            seeds=hparams["teacher_seeds"],
            curate_on=Protocol.named(
                hparams["protocol"], hparams["valid_fraction"]
            ).select_on,
            backbone=hparams["teacher_backbone"],
        )
        provenance["teachers"] = teacher_identity(teachers)
    check_run(output_folder, provenance)


def student_runs(hparams):
    """(mode, k) pairs: mean and random for every k, then the variants.

    With k = 1 the mean, random and single teachers give the same targets,
    so only the mean run is made (the report reads it as all three).
    """
    runs = [("mean", k) for k in hparams["ks"]]
    runs += [("random", k) for k in hparams["ks"] if k > 1]
    runs += [(mode, hparams["variant_k"]) for mode in hparams["variants"]]
    return runs


def run_all(jobs, n_jobs, prepared):
    """Run ``jobs`` (argument tuples of :func:`run`), ``n_jobs`` at a time,
    after checking that the finished ones may be skipped.
    """
    for job in jobs:
        check_finished(job, prepared)
    threads = max(1, (os.cpu_count() or 1) // n_jobs)
    with ThreadPoolExecutor(max_workers=n_jobs) as pool:
        futures = [pool.submit(run, *job, threads) for job in jobs]
        for future in futures:
            future.result()


def teacher_job(yaml_file, folder, options, seed, label):
    """The arguments of :func:`run` for one hard-label run."""
    return (
        os.path.join(HERE, "train_teacher.py"),
        yaml_file,
        os.path.join(folder, str(seed)),
        {**options, "seed": seed},
        label,
    )


def student_job(yaml_file, folder, options, teachers, run, label):
    """The arguments of :func:`run` for one distillation run.

    Arguments
    ---------
    yaml_file : str
    folder : str
        The student backbone's folder (``<root>/<backbone>-d``).
    options : dict
    teachers : tuple
        ``(backbone, bank folder)`` of the teachers.
    run : tuple
        ``(mode, k, seed)``.
    label : str
    """
    mode, k, seed = run
    backbone, bank_folder = teachers
    return (
        os.path.join(HERE, "distill.py"),
        yaml_file,
        os.path.join(folder, f"{backbone}_{mode}_k{k}", str(seed)),
        {
            **options,
            "seed": seed,
            "teacher_mode": mode,
            "k": k,
            "teacher_backbone": backbone,
            "teacher_bank": bank_folder,
        },
        label,
    )


def table2_jobs(hparams, root, shared, teachers):
    """Table 2: each listed backbone on hard labels and distilled from
    ``k`` teachers of ``backbone`` (mean teacher), for every seed.
    """
    config = hparams["table2"] or {}
    hard, soft = [], []
    for name, entry in config.items():
        options = {**shared, **(entry.get("overrides") or {})}
        for seed in hparams["table2_seeds"]:
            hard.append(
                teacher_job(
                    os.path.join(HERE, entry["teacher_hparams"]),
                    os.path.join(root, name),
                    options,
                    seed,
                    f"{name} hard labels (seed {seed})",
                )
            )
            soft.append(
                student_job(
                    os.path.join(HERE, entry["student_hparams"]),
                    os.path.join(root, f"{name}-d"),
                    options,
                    teachers,
                    ("mean", hparams["table2_k"], seed),
                    f"{name} soft labels (seed {seed})",
                )
            )
    return hard, soft


def unique(jobs):
    """Jobs with distinct output folders, in order (a Table 2 run may be a
    teacher or student run of the other stages).
    """
    seen, kept = set(), []
    for job in jobs:
        if job[2] not in seen:
            seen.add(job[2])
            kept.append(job)
    return kept


def main(argv):
    """Run every stage of the configured paper reproduction."""
    hparams_file, _, overrides = sb.parse_arguments(argv)
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    root = os.path.abspath(hparams["output_folder"])
    backbone = hparams["backbone"]
    data_folder = hparams["data_folder"]
    if data_folder != SYNTHETIC:  # the runs start in recipes/ICBHI
        data_folder = os.path.abspath(data_folder)
    shared = {
        "data_folder": data_folder,
        "synthetic_folder": os.path.join(root, "synthetic_icbhi"),
        "synthetic_recordings": hparams["synthetic_recordings"],
        "prepare_folder": os.path.join(root, "prepared"),
        **hparams["overrides"],
    }
    teacher_yaml = os.path.join(HERE, hparams["teacher_hparams"])
    student_yaml = os.path.join(HERE, hparams["student_hparams"])
    teachers = (backbone, os.path.join(root, backbone))
    started = time.time()

    # Prepared once here, before any run: the runs then find it done, and
    # finished runs are checked against it before they are skipped.
    cache = {}

    def prepared(plain):
        options = tuple(str(plain[key]) for key in PREPARE_KEYS)
        if options not in cache:
            data = cache[options] = prepare_run_data(plain)
            counts = "/".join(
                str(data.identity["cycles"][s]["count"])
                for s in ("train", "valid", "test")
            )
            print(
                f"[0/4] data {data.identity['key']} at "
                f"{plain['sample_rate']} Hz: {counts} cycles "
                "train/valid/test",
                flush=True,
            )
        return cache[options]

    hard2, soft2 = table2_jobs(hparams, root, shared, teachers)
    every_run = [(teacher_yaml, shared), (student_yaml, shared)]
    every_run += [(job[1], job[3]) for job in hard2 + soft2]
    for yaml_file, options in every_run:
        prepared(run_hparams(yaml_file, root, options))

    seeds = hparams["teacher_seeds"]
    print(f"[1/4] teachers: {backbone}, seeds {seeds}", flush=True)
    teacher_jobs = [
        teacher_job(
            teacher_yaml,
            teachers[1],
            shared,
            seed,
            f"teacher {i}/{len(seeds)} (seed {seed})",
        )
        for i, seed in enumerate(seeds, 1)
    ]
    run_all(teacher_jobs, hparams["jobs"], prepared)

    runs = [
        (mode, k, seed)
        for mode, k in student_runs(hparams)
        for seed in hparams["student_seeds"]
    ]
    print(f"[2/4] students: {len(runs)} runs", flush=True)
    student_jobs = [
        student_job(
            student_yaml,
            os.path.join(root, f"{backbone}-d"),
            shared,
            teachers,
            run,
            f"student {i}/{len(runs)} ({run[0]}, k={run[1]}, seed {run[2]})",
        )
        for i, run in enumerate(runs, 1)
    ]
    run_all(student_jobs, hparams["jobs"], prepared)

    done = {job[2] for job in teacher_jobs + student_jobs}
    table2 = [job for job in unique(hard2 + soft2) if job[2] not in done]
    print(
        f"[3/4] Table 2: {len(hparams['table2'] or {})} more backbones, "
        f"{len(table2)} runs",
        flush=True,
    )
    run_all(
        [job for job in table2 if job[0].endswith("train_teacher.py")],
        hparams["jobs"],
        prepared,
    )
    run_all(
        [job for job in table2 if job[0].endswith("distill.py")],
        hparams["jobs"],
        prepared,
    )

    print("[4/4] report", flush=True)
    report_folder = os.path.join(root, "report")
    os.makedirs(report_folder, exist_ok=True)
    write_csv(
        sweep(find_banks(teachers[1])),
        os.path.join(report_folder, f"ensemble_sweep_{backbone}.csv"),
    )
    report = write_report(
        root,
        report_folder,
        backbones=[backbone],
        table2_k=hparams["table2_k"],
    )
    print(f"report: {report} ({time.time() - started:.0f} s in all)")


if __name__ == "__main__":
    main(sys.argv[1:])
