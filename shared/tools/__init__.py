"""What people run, not what services import: the `qiji` command (cli), the demo, the audit
and figures commands, where those commands find Qiji (addressing), and the operator tools
(ops: the native stack, status, upgrade, backup and restore).

The kernel (`shared/` outside this package) never imports from here, and nothing here is
imported by a service: `make lint` holds both with import-linter contracts."""
