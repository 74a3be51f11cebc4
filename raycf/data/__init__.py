"""raycf's offline data: instruction stages, probe tasks, and their shipped sets.

    python -m raycf.data.registry        # list probe tasks by category and stage sizes
    python -m raycf.data.build --check   # the shipped sets are what the generator writes

    from raycf.data import load_stage, load_task, suite
    rows = load_stage("simplification", "train")            # [{"instruction", "input", "output"}, ...]
    task = load_task("facts_geography")                       # Task(name, category, type, template, ...)
    names = suite(["knowledge", "boolq_toy"])                 # categories expand to their tasks

Row schema and task YAML fields: raycf/data/README.md. Licences: raycf/data/LICENSE.md.
"""
from raycf.errors import DataError

# Loaded on first use (PEP 562), so that `python -m raycf.data.registry` does not import the module it runs.
_NAMES = {"CATEGORIES": "registry", "GENERAL": "registry", "STAGES": "registry", "Task": "registry",
          "load_stage": "registry", "load_task": "registry", "suite": "registry", "task_names": "registry",
          "load_rows": "rows"}
__all__ = ["DataError", *_NAMES]


def __getattr__(name: str):
    if name not in _NAMES:
        raise AttributeError(f"module 'raycf.data' has no attribute {name!r}")
    if _NAMES[name] == "rows":
        from raycf.data import rows as module
    else:
        from raycf.data import registry as module
    return getattr(module, name)
