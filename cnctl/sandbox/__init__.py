"""The sandbox fleet: virtual Jetson devices and GPU servers on one machine.

Each host is a Debian rootfs booted by `systemd-nspawn --boot` on its own overlayfs, in its own network
namespace, wired to a bridge in a site namespace that also serves the site services (signed apt repo,
artifact server, bucket emulators; see `cnctl.sandbox.site`). The machine reaches the site network
through one veth; nothing routes the sandbox subnet anywhere else.

Modules, bottom up: `instance` (names and directories one sandbox owns), `layout` (the hosts a stack
describes), `image` (the cached mmdebstrap image), `network`, `keys`, `host` (one booted host),
`cleanup` (leftovers of a crashed run), `inventory`, `fleet` (up / status / down).
"""
