"""kernel.uapi.iommufd against the real Linux 6.12 include/uapi/linux/iommufd.h,
compiled with gcc: every struct's size and every member's offset and size, and every
constant's value.

The header comes from Debian's ``linux-headers-6.12.*-common`` package (bookworm-security),
installed under ``/usr/src`` by ``make headers`` (part of ``make test``); without it this
test fails naming the package rather than passing unchecked.
"""

from __future__ import annotations

import glob
import subprocess
from pathlib import Path

import pytest

from kernel.uapi import iommufd as uapi

HEADER_GLOB = "/usr/src/linux-headers-6.12*-common/include/uapi/linux/iommufd.h"


def _header() -> Path:
    found = sorted(glob.glob(HEADER_GLOB))
    if not found:
        pytest.fail(
            "the Linux 6.12 iommufd.h is missing: install Debian's "
            "linux-headers-6.12.*-common (`make headers`) so that " + HEADER_GLOB + " exists"
        )
    return Path(found[-1])


def _run_c(tmp: Path, body: str) -> list[list[str]]:
    inc = tmp / "inc" / "linux"
    inc.mkdir(parents=True)
    (inc / "iommufd.h").symlink_to(_header())
    src = tmp / "probe.c"
    src.write_text(
        "#include <stdio.h>\n#include <stddef.h>\n#include <linux/iommufd.h>\n"
        f"int main(void) {{\n{body}\n  return 0;\n}}\n"
    )
    exe = tmp / "probe"
    subprocess.run(["gcc", "-I", str(tmp / "inc"), "-o", str(exe), str(src)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    return [line.split() for line in out.splitlines()]


def test_every_struct_has_the_6_12_size_and_member_offsets(tmp_path: Path) -> None:
    lines = []
    for cls in uapi.STRUCTS_6_12:
        s = f"struct {cls.C_NAME}"
        lines.append(f'  printf("{cls.C_NAME} sizeof %zu 0\\n", sizeof({s}));')
        for member in cls.c_layout():
            lines.append(
                f'  printf("{cls.C_NAME} {member} %zu %zu\\n", offsetof({s}, {member}),'
                f" sizeof((({s} *)0)->{member}));"
            )
    got: dict[str, dict[str, tuple[int, int]]] = {}
    for name, member, a, b in _run_c(tmp_path, "\n".join(lines)):
        got.setdefault(name, {})[member] = (int(a), int(b))
    want = {cls.C_NAME: {"sizeof": (cls.SIZE, 0)} | cls.c_layout() for cls in uapi.STRUCTS_6_12}
    assert got == want


def test_every_constant_has_the_6_12_value(tmp_path: Path) -> None:
    names = uapi.CONSTANTS_6_12
    assert "IOMMU_IOAS_MAP" in names and "IOMMU_HWPT_ALLOC_PASID" not in names
    body = "\n".join(f'  printf("{n} %llu\\n", (unsigned long long)({n}));' for n in names)
    got = {n: int(v) for n, v in _run_c(tmp_path, body)}
    assert got == {n: getattr(uapi, n) for n in names}


def test_newer_names_are_absent_from_6_12() -> None:
    text = _header().read_text()
    for name in uapi.NEWER_THAN_6_12:
        assert name not in text


@pytest.mark.parametrize("cls", uapi.STRUCTS_6_12, ids=lambda c: c.C_NAME)
def test_struct_round_trips_and_zero_extends(cls: type[uapi.UapiStruct]) -> None:
    raw = bytes(range(1, cls.SIZE + 1))
    obj = cls.from_bytes(raw)
    assert obj.to_bytes() == raw
    short = cls.from_bytes(raw[:4])
    assert short.to_bytes() == raw[:4] + bytes(cls.SIZE - 4)
    assert cls.offsetofend(next(reversed(cls.c_layout()))) == cls.SIZE
