"""Run stages of recipe runs: in local job slots, or as submitit job arrays.

A :class:`Run` is one command line, its working folder and its own log; a
:class:`Stage` is runs that may go in any order, after the stages it names.

- Locally (:func:`run_stage`), each run takes a free job slot: its
  ``CUDA_VISIBLE_DEVICES`` (one GPU, shared by ``runs_per_gpu`` runs) and
  ``OMP_NUM_THREADS`` (:func:`job_slots`).
- Through submitit (:func:`run_stages_submitit`), every stage is one job
  array. On SLURM all arrays are submitted at once, each held by
  ``--dependency=afterok`` on the arrays it needs; submitit's ``local`` and
  ``debug`` clusters have no such hold, so each array is submitted when
  the stages before it are done.

Every run appends its output to its log. A failed run is reported with its
log while the stage's other runs go on; when the stage ends,
:class:`StageFailed` lists every failed run, and no later stage starts.

Example
-------
>>> import sys, tempfile
>>> folder = tempfile.mkdtemp()
>>> runs = [
...     Run(f"run {i}", (sys.executable, "-c", f"print({i})"), folder,
...         f"{folder}/{i}.log")
...     for i in (1, 2)
... ]
>>> run_stage(Stage("demo", runs), job_slots(0, jobs=1, environ={}))
... # doctest: +ELLIPSIS
  [run ] run 1, log .../1.log
  [done] run 1 in 0:00:0...
  [demo] 1 done, 0 failed, 0 running, 1 left; ETA 0:00:0...
>>> open(f"{folder}/2.log").read().splitlines()[1]
'2'
"""

import os
import queue
import shlex
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from statistics import mean

# submitit's clusters, by the name run_paper.py's --executor gives them.
SUBMITIT_CLUSTERS = {
    "slurm": "slurm",
    "submitit-local": "local",
    "submitit-debug": "debug",
}


@dataclass(frozen=True)
class Run:
    """One recipe run: ``command`` started in ``cwd``, output to ``log``."""

    label: str
    command: tuple
    cwd: str
    log: str

    def shell_line(self):
        """The run as one shell line.

        Example
        -------
        >>> Run("a", ("python", "x.py", "a b"), "/r", "/r/a.log").shell_line()
        "cd /r && python x.py 'a b'"
        """
        return f"cd {shlex.quote(self.cwd)} && {shlex.join(self.command)}"


@dataclass(frozen=True)
class Stage:
    """Runs that may go in any order, after the stages named in ``after``."""

    name: str
    runs: tuple
    after: tuple = ()


@dataclass(frozen=True)
class ClusterOptions:
    """How submitit runs each job: the cluster (``slurm``, ``local`` or
    ``debug``), the folder of its own files and logs, and each job's
    resources (``partition`` None: SLURM's default; ``options``: more
    ``#SBATCH`` lines, e.g. ``{"account": "lab"}``).
    """

    cluster: str
    folder: str
    partition: str
    gpus_per_job: int
    cpus_per_job: int
    time_min: int
    options: dict = field(default_factory=dict)


class RunFailed(RuntimeError):
    """A run exited with an error."""


class StageFailed(RuntimeError):
    """Some runs of a stage failed; the stages that need it do not start."""

    def __init__(self, stage, failures):
        self.failures = list(failures)
        lines = "\n".join(f"  {line}" for line in self.failures)
        super().__init__(
            f"stopped after stage '{stage}', where {len(self.failures)} "
            f"run(s) failed:\n{lines}\nRead each log, fix the cause and run "
            "the same command again: finished runs are skipped."
        )


def run_command(command, cwd, log, env=None):
    """Run ``command`` in ``cwd`` with ``env`` added to the environment,
    appending the command line and its output to ``log``.

    Returns
    -------
    float
        The seconds it took.

    Raises
    ------
    RunFailed
        If it exits with an error, naming its log.

    Example
    -------
    >>> import sys, tempfile
    >>> log = tempfile.mkdtemp() + "/run.log"
    >>> try:
    ...     run_command([sys.executable, "-c", "exit(3)"], ".", log)
    ... except RunFailed as error:
    ...     print(str(error).replace(log, "LOG"))
    exit 3; log: LOG
    """
    os.makedirs(os.path.dirname(os.path.abspath(log)), exist_ok=True)
    start = time.monotonic()
    with open(log, "a", encoding="utf-8") as out:
        out.write(f"$ {shlex.join(command)}\n")
        out.flush()
        result = subprocess.run(
            list(command),
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    if result.returncode != 0:
        raise RunFailed(f"exit {result.returncode}; log: {log}")
    return time.monotonic() - start


def visible_gpus(device_count, environ=None):
    """The ``CUDA_VISIBLE_DEVICES`` value of each of the visible GPUs.

    Arguments
    ---------
    device_count : int
        ``torch.cuda.device_count()``.
    environ : dict
        The environment (default ``os.environ``): its own
        ``CUDA_VISIBLE_DEVICES`` names the GPUs, if set.

    Example
    -------
    >>> visible_gpus(2, environ={})
    ['0', '1']
    >>> visible_gpus(2, environ={"CUDA_VISIBLE_DEVICES": "3,5"})
    ['3', '5']
    """
    environ = os.environ if environ is None else environ
    given = environ.get("CUDA_VISIBLE_DEVICES")
    if given is None:
        return [str(i) for i in range(device_count)]
    return [gpu.strip() for gpu in given.split(",") if gpu.strip()][
        :device_count
    ]


def job_slots(
    device_count, runs_per_gpu=1, jobs=1, cpu_count=None, environ=None
):
    """The environment of each local job slot.

    With GPUs, each GPU gives ``runs_per_gpu`` slots, and a slot's runs see
    only its GPU; the slots go round the GPUs, so that runs fewer than the
    slots still spread over them. Without one, there are ``jobs`` slots.
    The CPU cores are split between the slots.

    Arguments
    ---------
    device_count : int
        ``torch.cuda.device_count()``.
    runs_per_gpu : int
        Runs sharing one GPU (light runs, e.g. CNN6 students).
    jobs : int
        Runs at a time without a GPU.
    cpu_count : int
        Default ``os.cpu_count()``.
    environ : dict
        See :func:`visible_gpus`.

    Returns
    -------
    list of dict
        One environment (``CUDA_VISIBLE_DEVICES``, ``OMP_NUM_THREADS``)
        per slot.

    Example
    -------
    >>> slots = job_slots(2, runs_per_gpu=2, cpu_count=8, environ={})
    >>> [slot["CUDA_VISIBLE_DEVICES"] for slot in slots]
    ['0', '1', '0', '1']
    >>> job_slots(0, jobs=2, cpu_count=8, environ={})
    [{'OMP_NUM_THREADS': '4'}, {'OMP_NUM_THREADS': '4'}]
    """
    gpus = visible_gpus(device_count, environ)
    if gpus:
        devices = [gpus[i % len(gpus)] for i in range(len(gpus) * runs_per_gpu)]
        slots = [{"CUDA_VISIBLE_DEVICES": gpu} for gpu in devices]
    else:
        slots = [{} for _ in range(jobs)]
    threads = max(1, (cpu_count or os.cpu_count() or 1) // len(slots))
    return [{**slot, "OMP_NUM_THREADS": str(threads)} for slot in slots]


def format_seconds(seconds):
    """``125.2`` -> ``'0:02:05'``."""
    return str(timedelta(seconds=round(seconds)))


class Progress:
    """A stage's runs done, failed, running and left, and an ETA: the mean
    duration of the runs finished so far, times the runs not finished, over
    the runs at a time (``width``, or those running now).

    Example
    -------
    >>> progress = Progress("teachers", 4, width=2)
    >>> progress.running = 1  # the 2nd of 2 runs started
    >>> progress.finish(60.0)  # the 1st
    >>> print(progress)
      [teachers] 1 done, 0 failed, 1 running, 2 left; ETA 0:01:30
    """

    def __init__(self, stage, total, width=None):
        self.stage, self.total, self.width = stage, total, width
        self.durations, self.failed, self.running = [], 0, 0

    @property
    def left(self):
        """Runs not started yet."""
        finished = len(self.durations) + self.failed
        return self.total - finished - self.running

    def finish(self, seconds=None):
        """One run ended, in ``seconds``, or failed (None)."""
        if seconds is None:
            self.failed += 1
        else:
            self.durations.append(seconds)

    def __str__(self):
        eta = "unknown"
        if self.durations:
            width = self.width or max(self.running, 1)
            todo = self.running + self.left
            eta = format_seconds(mean(self.durations) * todo / width)
        return (
            f"  [{self.stage}] {len(self.durations)} done, {self.failed} "
            f"failed, {self.running} running, {self.left} left; ETA {eta}"
        )


def run_stage(stage, slots):
    """Run the runs of ``stage``, one per free slot of ``slots``.

    Arguments
    ---------
    stage : Stage
    slots : list of dict
        The environment of each job slot (:func:`job_slots`).

    Raises
    ------
    StageFailed
        When every run has ended, if any failed.
    """
    progress = Progress(stage.name, len(stage.runs), width=len(slots))
    free = queue.SimpleQueue()
    for slot in slots:
        free.put(slot)
    lock = threading.Lock()
    failures = []

    def run_in_a_slot(run):
        slot = free.get()
        gpu = slot.get("CUDA_VISIBLE_DEVICES")
        where = f", GPU {gpu}" if gpu is not None else ""
        with lock:
            progress.running += 1
            print(f"  [run ] {run.label}{where}, log {run.log}", flush=True)
        try:
            seconds = run_command(run.command, run.cwd, run.log, slot)
        except RunFailed as error:
            with lock:
                progress.running -= 1
                progress.finish()
                failures.append(f"{run.label}: {error}")
                print(f"  [fail] {run.label}: {error}\n{progress}", flush=True)
        else:
            with lock:
                progress.running -= 1
                progress.finish(seconds)
                print(
                    f"  [done] {run.label} in {format_seconds(seconds)}\n"
                    f"{progress}",
                    flush=True,
                )
        finally:
            free.put(slot)

    with ThreadPoolExecutor(max_workers=len(slots)) as pool:
        list(pool.map(run_in_a_slot, stage.runs))
    if failures:
        raise StageFailed(stage.name, failures)


def commands_text(stages):
    """Every run of ``stages`` as one shell line, under a comment line per
    stage naming the stages it must wait for.

    Example
    -------
    >>> run = Run("a", ("python", "x.py"), "/r", "/r/a.log")
    >>> print(commands_text([Stage("one", (run,)), Stage("two", (), ("one",))]))
    # stage 1/2, one: 1 run(s)
    cd /r && python x.py
    # stage 2/2, two: 0 run(s), after one
    """
    lines = []
    for i, stage in enumerate(stages, 1):
        after = f", after {', '.join(stage.after)}" if stage.after else ""
        lines.append(
            f"# stage {i}/{len(stages)}, {stage.name}: "
            f"{len(stage.runs)} run(s){after}"
        )
        lines += [run.shell_line() for run in stage.runs]
    return "\n".join(lines)


def slurm_dependency(arrays):
    """SLURM's ``afterok`` on every job array of ``arrays`` (lists of jobs),
    or None if there is none.

    Example
    -------
    >>> class Job:
    ...     job_id = "12_0"
    >>> slurm_dependency([[Job()], []])
    'afterok:12'
    >>> slurm_dependency([[]]) is None
    True
    """
    ids = [jobs[0].job_id.split("_")[0] for jobs in arrays if jobs]
    return "afterok:" + ":".join(ids) if ids else None


def submitit_executor(options, name, after=(), gpus=None):
    """A submitit ``AutoExecutor`` for the jobs of one stage.

    Arguments
    ---------
    options : ClusterOptions
    name : str
        The jobs' name.
    after : list of list
        The job arrays the jobs wait for (SLURM only).
    gpus : int
        GPUs per job (default ``options.gpus_per_job``).
    """
    try:
        import submitit
    except ImportError as error:
        raise ImportError(
            "run_paper.py --executor slurm (or submitit-*) needs submitit: "
            'pip install -e ".[cluster]"'
        ) from error
    executor = submitit.AutoExecutor(
        folder=options.folder, cluster=options.cluster
    )
    sbatch = dict(options.options)
    dependency = slurm_dependency(after)
    if dependency:  # a failed array cancels the jobs waiting for it
        sbatch["kill_on_invalid_dep"] = "yes"
    executor.update_parameters(
        name=name,
        timeout_min=options.time_min,
        gpus_per_node=options.gpus_per_job if gpus is None else gpus,
        cpus_per_task=options.cpus_per_job,
        slurm_partition=options.partition,
        slurm_dependency=dependency,
        slurm_additional_parameters=sbatch or None,
    )
    return executor


def watch(stage, jobs, poll_s):
    """Report each job of ``stage`` as it ends, and a progress line.

    Raises
    ------
    StageFailed
        When every job has ended, if any failed.
    """
    from submitit.helpers import as_completed

    print(f"{stage.name}: waiting for {len(jobs)} run(s)", flush=True)
    run_of = {job.job_id: run for job, run in zip(jobs, stage.runs)}
    progress = Progress(stage.name, len(jobs))
    failures, ended = [], set()
    for job in as_completed(jobs, poll_frequency=poll_s):
        ended.add(job.job_id)
        progress.running = sum(
            j.state == "RUNNING" for j in jobs if j.job_id not in ended
        )
        run = run_of[job.job_id]
        if job.exception() is None:
            seconds = job.result()
            progress.finish(seconds)
            print(f"  [done] {run.label} in {format_seconds(seconds)}")
        else:
            progress.finish()
            failure = (
                f"{run.label}: failed; log: {run.log} (submitit's log: "
                f"{job.paths.stderr})"
            )
            failures.append(failure)
            print(f"  [fail] {failure}")
        print(progress, flush=True)
    if failures:
        raise StageFailed(stage.name, failures)


def run_stages_submitit(stages, options, env, report, poll_s=None):
    """Run every stage as one job array, then ``report`` as one job.

    On SLURM every array is submitted at once, each after the arrays of the
    stages it names (the report after all of them); on the other clusters
    each is submitted when the earlier ones are done. The stages are then
    watched in order.

    Arguments
    ---------
    stages : list of Stage
    options : ClusterOptions
    env : dict
        Added to each run's environment.
    report : callable
        Run as the last job (no argument, no GPU).
    poll_s : float
        Seconds between looks at the jobs (default 60 on SLURM, else 1).

    Returns
    -------
    object
        What ``report`` returned.

    Raises
    ------
    StageFailed
        After the first stage with a failed run; on SLURM, the jobs waiting
        for it are cancelled by SLURM.
    """
    slurm = options.cluster == "slurm"
    poll_s = poll_s or (60 if slurm else 1)
    arrays, unwatched = {}, []

    def wait_for_submitted():
        for stage in unwatched:
            watch(stage, arrays[stage.name], poll_s)
        unwatched.clear()

    for stage in stages:
        arrays[stage.name] = []
        if not stage.runs:
            continue
        if not slurm:
            wait_for_submitted()
        after = [arrays[name] for name in stage.after] if slurm else []
        executor = submitit_executor(options, f"rsc-{stage.name}", after)
        arrays[stage.name] = executor.map_array(
            run_command,
            [run.command for run in stage.runs],
            [run.cwd for run in stage.runs],
            [run.log for run in stage.runs],
            [env] * len(stage.runs),
        )
        dependency = slurm_dependency(after)
        print(
            f"submitted {stage.name}: {len(stage.runs)} run(s), job "
            f"{arrays[stage.name][0].job_id.split('_')[0]}"
            + (f", {dependency}" if dependency else ""),
            flush=True,
        )
        unwatched.append(stage)
    if not slurm:
        wait_for_submitted()
    after = list(arrays.values()) if slurm else []
    job = submitit_executor(options, "rsc-report", after, gpus=0).submit(report)
    print(f"submitted report: job {job.job_id}", flush=True)
    wait_for_submitted()
    return job.result()
