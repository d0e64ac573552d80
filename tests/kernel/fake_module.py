"""A third-party kernel module, loaded in tests through a faked entry point."""

from __future__ import annotations

from kernel.hookspecs import hookimpl
from kernel.module import InitLevel, KernelModule
from kernel.params import Param, parse_int
from kernel.printk import pr_info

answer = Param("fake.answer", 0, parse_int, "what the module prints at init")
inits: list[int] = []


def fake_init() -> None:
    inits.append(answer.value)
    pr_info(f"fake: hello, answer={answer.value}")


@hookimpl
def iommulab_modules() -> list[KernelModule]:
    return [
        KernelModule(
            "fake", init=fake_init, level=InitLevel.DEVICE, params=(answer,), description="test"
        )
    ]
