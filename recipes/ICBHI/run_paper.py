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

Each run is its own process, with its own log
(``<run output folder>/run_paper.log``); a stage's runs go on when one
fails, and run_paper stops at the end of a stage that had a failure,
listing each failed run and its log. Where the runs go:

- locally (default): one run per visible GPU at a time
  (``CUDA_VISIBLE_DEVICES`` set per run; ``--runs_per_gpu 2`` shares
  each GPU between two light runs), or, without a GPU, ``jobs`` (YAML)
  runs at a time;
- ``--executor slurm``: one submitit job array per stage, each held by
  SLURM until the stages it needs are done (``--slurm_partition``,
  ``--slurm_gpus_per_job``, ``--slurm_cpus_per_job``, ``--slurm_time``,
  ``--slurm_folder``, ``--slurm_option KEY=VALUE``); ``submitit-local``
  and ``submitit-debug`` run the same on this machine;
- ``--print_commands``: print each run's shell line, by stage in
  dependency order, and run nothing.

SpeechBrain run options (``--device``, ``--precision``, ...) are passed on
to every run.

To run (from recipes/ICBHI)::

    python run_paper.py hparams/paper_demo.yaml
    python run_paper.py hparams/paper_icbhi.yaml --data_folder /data/ICBHI
    python run_paper.py hparams/paper_icbhi.yaml --data_folder /data/ICBHI \
        --executor slurm --slurm_partition gpu

Authors
 * speechbrain-rsc contributors 2026
"""

import argparse
import os
import sys
import time
from functools import partial

import torch
import yaml
from hyperpyyaml import load_hyperpyyaml
from speechbrain_rsc.bank import BANK_FILENAME, find_banks
from speechbrain_rsc.dataio import SYNTHETIC
from speechbrain_rsc.distillation import Targets
from speechbrain_rsc.ensemble import sweep, write_csv
from speechbrain_rsc.errors import reported_errors
from speechbrain_rsc.jobs import (
    SUBMITIT_CLUSTERS,
    ClusterOptions,
    Run,
    Stage,
    StageFailed,
    commands_text,
    job_slots,
    run_stage,
    run_stages_submitit,
)
from speechbrain_rsc.provenance import check_run, run_identity, teacher_identity
from speechbrain_rsc.recipe import (
    Protocol,
    prepare_data,
    read_plain_hparams,
    run_is_complete,
)
from speechbrain_rsc.report import write_report

import speechbrain as sb

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


def run_option_args(run_opts):
    """The SpeechBrain run options given on the command line, as arguments
    for every run (``--noprogressbar`` is always added).

    Example
    -------
    >>> _, run_opts, _ = sb.parse_arguments(
    ...     ["a.yaml", "--precision", "bf16", "--debug", "--seed", "1"]
    ... )
    >>> run_option_args(run_opts)
    ['--debug', '--precision', 'bf16']
    """
    args = []
    for name in sorted(run_opts["overridden_args"] - {"noprogressbar"}):
        value = run_opts[name]
        if value is True:
            args.append(f"--{name}")
        elif isinstance(value, list):
            args += [f"--{name}", *map(str, value)]
        else:
            args += [f"--{name}", str(value)]
    return args


def as_run(job, run_options):
    """The :class:`~speechbrain_rsc.jobs.Run` of a job of
    :func:`teacher_job` or :func:`student_job`, with its own log in its
    output folder.
    """
    script, hparams_file, output_folder, options, label = job
    command = [sys.executable, script, hparams_file]
    command += flag_args({**options, "output_folder": output_folder})
    command += [*run_options, "--noprogressbar"]
    log = os.path.join(output_folder, "run_paper.log")
    return Run(label, tuple(command), HERE, log)


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
        prompt_location=plain["prompt_location"],
        prompt_metadata_file=plain["prompt_metadata_file"],
        overrun=plain["overrun"],
        synthetic_folder=plain["synthetic_folder"],
        synthetic_recordings=plain["synthetic_recordings"],
    )


def check_finished(job, prepared):
    """Refuse to skip a finished run made from other data or teachers.

    Arguments
    ---------
    job : tuple
        A job of :func:`teacher_job` or :func:`student_job`.
    prepared : callable
        Plain hparams -> :class:`~speechbrain_rsc.recipe.PreparedData`.
    """
    script, hparams_file, output_folder, options, _ = job
    if not run_is_complete(output_folder)[0]:
        return
    hparams = run_hparams(hparams_file, output_folder, options)
    provenance = {
        "data": prepared(hparams).identity,
        "run": run_identity(hparams),
    }
    if os.path.basename(script) == "distill.py":
        # Plain hparams read objects as None: the same Targets, from its knobs
        targets = Targets(
            hparams["teacher_mode"],
            hparams["k"],
            teacher_seeds=hparams["teacher_seeds"],
            noise_variance=hparams["noise_variance"],
        )
        teachers = targets.select_teachers(
            hparams["teacher_bank"],
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


def teacher_job(yaml_file, folder, options, seed, label):
    """One hard-label run: ``(script, hparams file, output folder, options,
    label)``.
    """
    return (
        os.path.join(HERE, "train_teacher.py"),
        yaml_file,
        os.path.join(folder, str(seed)),
        {**options, "seed": seed},
        label,
    )


def student_job(yaml_file, folder, options, teachers, run, label):
    """One distillation run, as :func:`teacher_job` gives one.

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


def parse_run_paper_args(argv):
    """Split run_paper's own options from the rest of ``argv`` (the
    paper YAML, its overrides and the SpeechBrain run options).
    """
    parser = argparse.ArgumentParser(
        prog="run_paper.py",
        add_help=False,
        allow_abbrev=False,
        description="Options of run_paper.py itself (the others are "
        "overrides of the paper YAML and SpeechBrain run options).",
    )
    parser.add_argument(
        "--executor",
        choices=["local", *SUBMITIT_CLUSTERS],
        default="local",
        help="where the runs go: local job slots (default), SLURM through "
        "submitit, or submitit's local or debug cluster on this machine",
    )
    parser.add_argument(
        "--runs_per_gpu",
        type=int,
        default=1,
        help="local runs sharing one GPU (light runs, e.g. CNN6)",
    )
    parser.add_argument(
        "--print_commands",
        action="store_true",
        help="print each run's shell line, by stage, and run nothing",
    )
    parser.add_argument("--slurm_partition", default=None)
    parser.add_argument("--slurm_gpus_per_job", type=int, default=1)
    parser.add_argument(
        "--slurm_cpus_per_job",
        type=int,
        default=4,
        help="CPUs of each job, and its runs' OMP_NUM_THREADS",
    )
    parser.add_argument(
        "--slurm_time", type=int, default=1440, help="minutes per job"
    )
    parser.add_argument(
        "--slurm_folder",
        default=None,
        help="submitit's own files and logs (default: "
        "<output_folder>/submitit)",
    )
    parser.add_argument(
        "--slurm_option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="another #SBATCH option of every job, e.g. account=lab",
    )
    if "-h" in argv or "--help" in argv:
        parser.print_help()  # then SpeechBrain's parser prints its own
    args, rest = parser.parse_known_args(argv)
    if args.runs_per_gpu < 1:
        parser.error("--runs_per_gpu must be 1 or more")
    for option in args.slurm_option:
        if "=" not in option:
            parser.error(f"--slurm_option {option}: give KEY=VALUE")
    return args, rest


def write_paper_report(root, backbone, table2_k, bootstrap=1000, seed=0):
    """Write the report of the runs under ``root``; return its path."""
    report_folder = os.path.join(root, "report")
    os.makedirs(report_folder, exist_ok=True)
    banks = find_banks(os.path.join(root, backbone))
    write_csv(
        sweep(banks, bootstrap=bootstrap, bootstrap_seed=seed),
        os.path.join(report_folder, f"ensemble_sweep_{backbone}.csv"),
    )
    return write_report(
        root, report_folder, [backbone], table2_k, bootstrap, seed
    )


def paper_stages(hparams, root):
    """The stages of the paper, in dependency order, each with the header
    run_paper prints: :class:`~speechbrain_rsc.jobs.Stage` of jobs (the
    arguments of :func:`teacher_job` or :func:`student_job`), each naming
    the stages whose banks it reads.
    """
    backbone = hparams["backbone"]
    data_folder = hparams["data_folder"]
    if data_folder != SYNTHETIC:  # the runs start in recipes/ICBHI
        data_folder = os.path.abspath(data_folder)
    shared = {
        "data_folder": data_folder,
        "prepare_folder": os.path.join(root, "prepared"),
        **hparams["overrides"],
    }
    if data_folder == SYNTHETIC:
        shared["synthetic_folder"] = os.path.join(root, "synthetic_icbhi")
        if "synthetic_recordings" in hparams:  # else each YAML's own
            shared["synthetic_recordings"] = hparams["synthetic_recordings"]
    teachers = (backbone, os.path.join(root, backbone))
    # The model options of <backbone> (a Table 2 backbone has its own)
    own = {**shared, **(hparams["backbone_overrides"] or {})}
    seeds = hparams["teacher_seeds"]
    teacher_jobs = [
        teacher_job(
            os.path.join(HERE, hparams["teacher_hparams"]),
            teachers[1],
            own,
            seed,
            f"teacher {i}/{len(seeds)} (seed {seed})",
        )
        for i, seed in enumerate(seeds, 1)
    ]
    runs = [
        (mode, k, seed)
        for mode, k in student_runs(hparams)
        for seed in hparams["student_seeds"]
    ]
    student_jobs = [
        student_job(
            os.path.join(HERE, hparams["student_hparams"]),
            os.path.join(root, f"{backbone}-d"),
            own,
            teachers,
            run,
            f"student {i}/{len(runs)} ({run[0]}, k={run[1]}, seed {run[2]})",
        )
        for i, run in enumerate(runs, 1)
    ]
    hard2, soft2 = table2_jobs(hparams, root, shared, teachers)
    done = {job[2] for job in teacher_jobs + student_jobs}
    table2 = [job for job in unique(hard2 + soft2) if job[2] not in done]
    return [
        (
            f"[1/4] teachers: {backbone}, seeds {seeds}",
            Stage("teachers", tuple(teacher_jobs)),
        ),
        (
            f"[2/4] students: {len(runs)} runs",
            Stage("students", tuple(student_jobs), ("teachers",)),
        ),
        (
            f"[3/4] Table 2: {len(hparams['table2'] or {})} more backbones, "
            f"{len(table2)} runs; hard labels",
            Stage("table2-hard", tuple(j for j in table2 if j in hard2)),
        ),
        (
            "[3/4] Table 2: students",
            Stage(
                "table2-students",
                tuple(j for j in table2 if j in soft2),
                ("teachers",),
            ),
        ),
    ]


def main(argv):
    """Run every stage of the configured paper reproduction."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise SystemExit(
            "run_paper.py starts its own runs, one per GPU: start it with "
            "python, not torchrun (README, Multi-GPU)"
        )
    args, rest = parse_run_paper_args(argv)
    hparams_file, run_opts, overrides = sb.parse_arguments(rest)
    device = run_opts["device"] or ""
    if device.startswith("cuda:") and device != "cuda:0":
        raise SystemExit(
            f"run_paper.py --device {device}: each run sees only its own "
            "GPU, as cuda:0; give --device cuda:0 or leave --device out"
        )
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    root = os.path.abspath(hparams["output_folder"])
    stages = paper_stages(hparams, root)
    run_options = run_option_args(run_opts)

    if args.print_commands:
        every = [
            Stage(
                s.name, tuple(as_run(j, run_options) for j in s.runs), s.after
            )
            for _, s in stages
        ]
        print(commands_text(every))
        print(
            "# then the report: this run_paper.py command again, without "
            "--print_commands (it skips the finished runs)"
        )
        return

    # Prepared once here, before any run: the runs then find it done, and
    # finished runs are checked against it before they are skipped.
    cache = {}

    def prepared(plain):
        """The data a run of plain hparams reads, prepared once here."""
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

    started = time.time()
    for _, stage in stages:
        for job in stage.runs:
            prepared(run_hparams(job[1], job[2], job[3]))
            check_finished(job, prepared)

    def runs_left(header, stage):
        """Print the stage's header and its finished runs; the others."""
        print(header, flush=True)
        left = []
        for job in stage.runs:
            done, why = run_is_complete(job[2])
            if done:
                print(f"  [skip] {job[4]}: done ({job[2]})", flush=True)
                continue
            if os.path.isfile(os.path.join(job[2], BANK_FILENAME)):
                print(f"  [redo] {job[4]}: {why}", flush=True)
            left.append(as_run(job, run_options))
        return Stage(stage.name, tuple(left), stage.after)

    write = partial(
        write_paper_report,
        root,
        hparams["backbone"],
        hparams["table2_k"],
        hparams.get("bootstrap", 1000),
        hparams.get("bootstrap_seed", 0),
    )
    if args.executor == "local":
        slots = job_slots(
            torch.cuda.device_count(), args.runs_per_gpu, hparams["jobs"]
        )
        for header, stage in stages:
            stage = runs_left(header, stage)
            if stage.runs:
                run_stage(stage, slots)
        print("[4/4] report", flush=True)
        report = write()
    else:
        cluster = ClusterOptions(
            cluster=SUBMITIT_CLUSTERS[args.executor],
            folder=args.slurm_folder or os.path.join(root, "submitit"),
            partition=args.slurm_partition,
            gpus_per_job=args.slurm_gpus_per_job,
            cpus_per_job=args.slurm_cpus_per_job,
            time_min=args.slurm_time,
            options=dict(o.split("=", 1) for o in args.slurm_option),
        )
        report = run_stages_submitit(
            [runs_left(header, stage) for header, stage in stages],
            cluster,
            {"OMP_NUM_THREADS": str(args.slurm_cpus_per_job)},
            write,
        )
    print(f"report: {report} ({time.time() - started:.0f} s in all)")


if __name__ == "__main__":
    try:
        with reported_errors():
            main(sys.argv[1:])
    except StageFailed as error:
        sys.exit(str(error))
