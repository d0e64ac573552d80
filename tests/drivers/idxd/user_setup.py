"""Shared setup for the user-SVA tests: the ``default`` machine (VT-d + DSA) booted
without the default kernel WQs, then configured with user WQs through the
accel-config JSON API, and processes that open them."""

from __future__ import annotations

from typing import Any

from drivers.idxd.idxd import IdxdWq
from drivers.idxd.sysfs import idxd_enable, idxd_load_config
from iommulab.presets import PRESETS
from iommulab.userdsa import UserWq
from kernel.boot import Kernel
from kernel.sched import CAP_SYS_RAWIO, TaskStruct, user_process_create
from tests.drivers.idxd.conftest import Boot, dsa0

SWQ = "/dev/dsa/wq0.0"
DWQ = "/dev/dsa/wq0.1"
SWQ_BOF = "/dev/dsa/wq0.2"


def user_config(bof: bool = False) -> dict[str, Any]:
    """A shared user WQ (wq0.0), a dedicated one (wq0.1) and a shared one with
    block-on-fault (wq0.2) in one group; ``bof`` also sets it on wq0.0."""

    def wq(i: int, mode: str, bof_on: bool) -> dict[str, Any]:
        d: dict[str, Any] = {
            "dev": f"wq0.{i}",
            "mode": mode,
            "size": 8,
            "priority": 10,
            "type": "user",
            "name": f"app{i}",
            "driver_name": "user",
            "block_on_fault": int(bof_on),
        }
        if mode == "shared":
            d["threshold"] = 7
        return d

    return {
        "dev": "dsa0",
        "groups": [
            {
                "dev": "group0.0",
                "grouped_workqueues": [
                    wq(0, "shared", bof),
                    wq(1, "dedicated", False),
                    wq(2, "shared", True),
                ],
                "grouped_engines": [{"dev": "engine0.0"}, {"dev": "engine0.1"}],
            }
        ],
    }


def boot_user(make_kernel: Boot, spec: str = "default", bof: bool = False) -> Kernel:
    k = make_kernel(dict(PRESETS[spec]), "idxd.default_config=0", with_intel=spec != "smmuv3")
    idxd = dsa0()
    idxd_load_config(idxd, user_config(bof))
    idxd_enable(idxd)
    return k


def wq_of(path: str) -> IdxdWq:
    return dsa0().wqs[int(path.rsplit(".", 1)[1])]


def process(comm: str = "app") -> TaskStruct:
    return user_process_create(comm, caps=frozenset({CAP_SYS_RAWIO}))


def open_wq(task: TaskStruct, path: str = SWQ) -> UserWq:
    return UserWq.open(task, path, shared=path != DWQ)
