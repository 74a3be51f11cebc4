"""The config's YAML side: search-space files, `--set dotted.key=value` overrides, and the config as people and
MLflow see it (credentials redacted)."""
from __future__ import annotations

from pathlib import Path

import yaml

from raycf.config.dotted import set_dotted
from raycf.config.schema import ExperimentConfig, from_dict
from raycf.errors import ConfigError
from raycf.redact import redact_uri
from raycf.yamlfile import read_yaml as read_yaml_file


def parse_overrides(items: list[str]) -> dict:
    """`--set a.b=value` items -> {"a.b": value}; values are read as YAML scalars (3e-4, true, [a, b])."""
    out, problems = {}, []
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            problems.append(f"--set {item}: expected dotted.key=value, e.g. --set optim.lr=3e-4")
            continue
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            out[key.strip()] = raw
    if problems:
        raise ConfigError(problems)
    return out


def shipped_example() -> str:
    """search_spaces/default.yaml as this process can open it: relative where the working directory holds it, else
    the checkout's beside the installed package (an editable install), else the bare relative name."""
    relative = Path("search_spaces/default.yaml")
    checkout = Path(__file__).resolve().parents[2] / relative
    return str(relative) if relative.exists() or not checkout.exists() else str(checkout)


def read_yaml(path: str | Path) -> dict:
    """The mapping of sections in a search-space YAML; ConfigError for a file that is missing, not YAML, empty or
    not a mapping (an empty space must not silently run the built-in defaults)."""
    if not str(path).strip():  # `--space "$SPACE"` with SPACE unset: not the built-in defaults
        raise ConfigError([f"empty; give a YAML file, e.g. {shipped_example()}"], "--space")
    if not Path(path).exists():
        raise ConfigError([f"file not found; give a YAML from search_spaces/, e.g. {shipped_example()}"
                           + ("" if Path(path).is_absolute() else f" (a relative path is read from {Path.cwd()})")],
                          str(path))
    data = read_yaml_file(path, ConfigError)
    if data is None:
        raise ConfigError(["the file is empty (or only comments); write the sections of an experiment, e.g. "
                           "`model: {name: raycf-tiny}` (see search_spaces/default.yaml)"], str(path))
    if not isinstance(data, dict):
        raise ConfigError([f"top level must be a mapping of sections, got {type(data).__name__}; write sections "
                           f"like `model: {{name: raycf-tiny}}` (see search_spaces/default.yaml)"], str(path))
    return data


def load(path: str | Path | None = None, overrides: dict | None = None) -> ExperimentConfig:
    """The config of a search-space YAML with `overrides` applied (dotted keys)."""
    data = read_yaml(path) if path is not None else {}
    for key, value in (overrides or {}).items():
        if key.split(".")[0] in ("search", "sweep"):
            set_dotted(data, key, value)
            continue
        data.get("search", {}).pop(key, None)  # a --set fixes a searched dimension
        set_dotted(data, key, value)
    try:
        return from_dict(data, source=str(path) if path else None)
    except ConfigError as e:
        if not overrides:
            raise
        raise located(e, overrides) from None


def located(e: ConfigError, overrides: dict) -> ConfigError:
    """The config's problems, each naming where its key was given: `--set KEY` for an override, else the file."""
    def where(problem: str) -> str:
        key = next((k for k in sorted(overrides, key=len, reverse=True)
                    if problem.startswith((f"{k}:", f"{k} ", f"{k}.", f"{k}["))), None)
        return f"--set {problem}" if key else (f"{e.source}: {problem}" if e.source else problem)
    out = ConfigError([where(p) for p in e.problems])
    out.problems, out.located = list(e.problems), True  # the problems themselves as before; the lines located
    return out


def public_dict(cfg: ExperimentConfig) -> dict:
    """The config as it may be printed, logged to MLflow or written next to results: no credentials."""
    data = cfg.to_dict()
    data["tracking"]["uri"] = redact_uri(data["tracking"]["uri"])
    data["storage_path"] = redact_uri(data["storage_path"])
    return data


def to_yaml(cfg: ExperimentConfig) -> str:
    """The resolved config for people and artifacts (credentials in tracking.uri and storage_path redacted)."""
    return yaml.safe_dump(public_dict(cfg), sort_keys=False)


def flat_params(cfg: ExperimentConfig) -> dict[str, str]:
    """Dotted key -> printable value, for MLflow params (lists become readable strings)."""
    out = {}

    def walk(obj, prefix):
        for key, value in obj.items():
            if key in ("search", "sweep"):
                continue
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            elif isinstance(value, list):
                out[prefix + key] = " > ".join(map(str, value)) if key == "stages" else ",".join(map(str, value))
            else:
                out[prefix + key] = str(value)
    walk(public_dict(cfg), "")
    return out
