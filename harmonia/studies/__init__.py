"""Model-zoo studies: a TOML file of models x data x measurements, run resumably, exported, reported.

See docs/studies.md. ``load_study`` reads the file, ``make_plan`` lists its tasks (keys
known without loading models), ``run_study`` does what is not done (sequential, worker
processes or Ray), ``task_states`` is the status, ``study_table`` / ``export_table`` the
tidy results and ``write_report`` the HTML report.
"""

from harmonia.studies.plan import Task, make_plan
from harmonia.studies.runner import run_study, task_states
from harmonia.studies.spec import Study, StudyFileError, load_study

__all__ = ["Study", "StudyFileError", "Task", "load_study", "make_plan", "run_study", "task_states"]
