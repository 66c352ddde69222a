"""Config: the typed schema, its validation, and the glue that drives Hydra from the CLI."""

from __future__ import annotations

from namexp.config.schema import RunConfig, register_schema
from namexp.config.validate import to_run_config

__all__ = ["RunConfig", "register_schema", "to_run_config"]
