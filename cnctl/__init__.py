"""cnctl: deploy CircularNet to Google Cloud GPU VMs, Jetson edge devices and GPU servers."""
