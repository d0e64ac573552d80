"""A module with a misspelled hook implementation (must be rejected)."""

from kernel.hookspecs import hookimpl


@hookimpl
def iommulab_modulez() -> list[object]:
    return []
