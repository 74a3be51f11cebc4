"""The typed experiment config: raycf.config.schema (sections, validation), raycf.config.files (YAML, --set
overrides, printing). What the rest of raycf imports is re-exported here."""
from raycf.config.files import flat_params, load, parse_overrides, public_dict, read_yaml, to_yaml
from raycf.config.checks import CHOICES
from raycf.config.dotted import get_dotted, set_dotted
from raycf.config.schema import (DataConfig, ExperimentConfig, FinetuneConfig, ModelConfig, OptimConfig, ProbeConfig,
                                 ResourcesConfig, SweepConfig, TrackingConfig, WarmStartConfig, from_dict)
from raycf.errors import ConfigError

__all__ = ["CHOICES", "ConfigError", "DataConfig", "ExperimentConfig", "FinetuneConfig", "ModelConfig",
           "OptimConfig", "ProbeConfig", "ResourcesConfig", "SweepConfig", "TrackingConfig", "WarmStartConfig",
           "flat_params", "from_dict", "get_dotted", "load", "parse_overrides", "public_dict", "read_yaml",
           "set_dotted", "to_yaml"]
