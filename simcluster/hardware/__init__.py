"""Hardware as plain data: devices (GPUs and CPU sockets), links, and node templates.

:mod:`.specs` defines what a device, a link and a node are (checked on construction);
:mod:`.registry` finds and loads them by name from ``hwspecs/``.
"""

from simcluster.hardware.registry import (default_tp_link, hwspecs_dir, hwspecs_dirs,
                                          hwspecs_subdirs, list_devices, list_links, list_nodes,
                                          load_device, load_link, load_node, read_toml_file)
from simcluster.hardware.specs import (ARCH_FAMILIES, DEVICE_KINDS, DTYPES, LINK_KINDS,
                                       DeviceSpec, FlopsTable, LinkSpec, NodeSpec,
                                       normalize_dtype)

__all__ = ["ARCH_FAMILIES", "DEVICE_KINDS", "DTYPES", "LINK_KINDS", "DeviceSpec", "FlopsTable",
           "LinkSpec", "NodeSpec", "default_tp_link", "hwspecs_dir", "hwspecs_dirs",
           "hwspecs_subdirs", "list_devices", "list_links", "list_nodes",
           "load_device", "load_link", "load_node", "normalize_dtype", "read_toml_file"]
