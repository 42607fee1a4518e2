"""The filters templates/systemd/*.j2 write every value through: cnctl_exec_arg and cnctl_unit_value, the same
names and bytes as in pyinfra's environment (deploy/steps.py `UnitFilters`), from the one copy of the escaping
(cnctl/unitescape.py, carried as plugins/module_utils/unitescape.py)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.circularnet.fleet.plugins.module_utils import unitescape


class FilterModule:
    """cnctl_exec_arg, cnctl_unit_value: see plugins/module_utils/unitescape.py."""

    def filters(self):
        return unitescape.filters(AnsibleFilterError)
