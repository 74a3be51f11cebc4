"""raycf's offline data: instruction stages, probe tasks, and their shipped sets.

    python -m raycf.data.registry        # list probe tasks by category and stage sizes
    python -m raycf.data.build --check   # the shipped sets are what the generator writes

    from raycf.data import load_stage, load_task, suite
    rows = load_stage("simplification", "train")            # [{"instruction", "input", "output"}, ...]
    task = load_task("facts_geography")                       # Task(name, category, type, template, ...)
    names = suite(["knowledge", "boolq_toy"])                 # categories expand to their tasks

Row schema and task YAML fields: raycf/data/README.md. Licences: raycf/data/LICENSE.md.
"""
from raycf.data.registry import CATEGORIES, GENERAL, STAGES, Task, load_stage, load_task, suite, task_names
from raycf.data.rows import load_rows
from raycf.errors import DataError

__all__ = ["CATEGORIES", "GENERAL", "STAGES", "DataError", "Task", "load_rows", "load_stage", "load_task",
           "suite", "task_names"]
