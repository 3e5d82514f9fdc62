"""Jobs and runs: a documented spec (TOML), a run folder per launch, and a runner thread.

    spec = JobSpec.from_toml_file("topk.toml")
    run = Run.create(spec)                       # a folder under data_dir()/runs
    execute(run)                                 # the job, with checkpoints; or Runner().submit(run)
"""

from core.jobs.spec import JobSpec, DataSpec, RunSpec, SpecError
from core.jobs.runs import Run, list_runs, runs_root
from core.jobs.runner import JobContext, Runner, execute

__all__ = ["JobSpec", "DataSpec", "RunSpec", "SpecError", "Run", "list_runs", "runs_root",
           "JobContext", "Runner", "execute"]
