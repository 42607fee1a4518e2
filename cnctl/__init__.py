"""cnctl: deploy CircularNet to Google Cloud GPU VMs, Jetson edge devices and GPU servers."""

__version__ = "0.1.0"
