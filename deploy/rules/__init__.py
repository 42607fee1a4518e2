"""The host layers' pure rules: verdicts, builders and command lines as plain functions of data.

Both engines use this one copy: the pyinfra layers (deploy/<layer>.py) import it, and the Ansible collection
carries it as plugins/module_utils/rules/ (cnctl/collection.py), which its filters import. So it imports
neither pyinfra nor cnctl: the standard library, PyYAML (Ansible's own dependency) and its siblings, relatively.
"""

# The collection these rules travel in, and the prefix of every filter name (templates/ and the roles' tasks
# call `circularnet.fleet.cnctl_*`; pyinfra's environment registers the unit filters under the same names).
NAMESPACE = "circularnet"
NAME = "fleet"
FILTER_PREFIX = f"{NAMESPACE}.{NAME}."
