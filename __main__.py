"""The Pulumi program: read this stack through the one schema, build the cloud layer."""

from cnctl.cloud import build
from cnctl.config import from_pulumi_config

build(from_pulumi_config())
