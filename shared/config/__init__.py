"""Experiment configuration: the schema (dataclasses), the typed loader (presets, overrides,
variants) and the views comparisons read. Import from here; the split is for reading."""
from shared.config.loader import (
                                  config_from_dict,
                                  dump_yaml,
                                  field_type,
                                  load_config,
                                  parse_override,
                                  split_sweeps,
                                  to_dict,
)
from shared.config.schema import (
                                  Config,
                                  ConfigError,
                                  DataConfig,
                                  EncoderConfig,
                                  EvalConfig,
                                  LatencyConfig,
                                  LMConfig,
                                  ManifestConfig,
                                  SelectiveConfig,
                                  SyntheticConfig,
                                  TrainConfig,
                                  base_arm_name,
)
from shared.config.views import NOT_TRAINING, flatten, training_view, variant_changes

__all__ = ["Config", "ConfigError", "DataConfig", "EncoderConfig", "EvalConfig", "LatencyConfig", "LMConfig",
           "ManifestConfig", "SelectiveConfig", "SyntheticConfig", "TrainConfig", "base_arm_name", "config_from_dict",
           "dump_yaml", "field_type", "load_config", "parse_override", "split_sweeps", "to_dict", "NOT_TRAINING",
           "flatten", "training_view", "variant_changes"]
