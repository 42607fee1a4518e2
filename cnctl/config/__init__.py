"""The stack schema: one typed model of an environment, read the same way by every engine."""

from cnctl.config.errors import Problem, StackConfigError
from cnctl.config.loader import from_pulumi_config, load_stack, parse, stack_path
from cnctl.config.schema import StackConfig

__all__ = ["Problem", "StackConfig", "StackConfigError", "from_pulumi_config", "load_stack", "parse", "stack_path"]
