"""DsaHwDesc / DsaCompletionRecord layouts against linux/idxd.h compiled with gcc."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from hw.uapi import idxd
from hw.uapi.idxd import (
    DSA_COMPLETION_RECORD_LAYOUT,
    DSA_HW_DESC_LAYOUT,
    DsaCompletionRecord,
    DsaHwDesc,
)

BITFIELDS = {"pasid", "rsvd", "priv", "flags", "opcode", "invalid_flags", "rsvd2"}


def _c_layout(tmp: Path, struct: str, names: list[str]) -> dict[str, tuple[int, int]]:
    lines = [
        "#include <stdio.h>",
        "#include <stddef.h>",
        "#include <linux/idxd.h>",
        "int main(void) {",
        f'  printf("sizeof %zu %zu\\n", sizeof(struct {struct}), (size_t)0);',
    ]
    for n in names:
        lines.append(
            f'  printf("{n} %zu %zu\\n", offsetof(struct {struct}, {n}),'
            f" sizeof(((struct {struct} *)0)->{n}));"
        )
    lines.append("  return 0; }")
    src = tmp / "layout.c"
    src.write_text("\n".join(lines))
    exe = tmp / "layout"
    subprocess.run(["gcc", "-o", str(exe), str(src)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    return {name: (int(a), int(b)) for name, a, b in (line.split() for line in out.splitlines())}


@pytest.mark.parametrize(
    ("struct", "cls", "layout"),
    [
        ("dsa_hw_desc", DsaHwDesc, DSA_HW_DESC_LAYOUT),
        ("dsa_completion_record", DsaCompletionRecord, DSA_COMPLETION_RECORD_LAYOUT),
    ],
)
def test_every_member_at_the_uapi_offset(
    tmp_path: Path, struct: str, cls: type, layout: dict
) -> None:
    names = [n for n in layout if n not in BITFIELDS]
    c = _c_layout(tmp_path, struct, names)
    assert c.pop("sizeof")[0] == cls.SIZE
    assert {n: (layout[n][0], layout[n][1]) for n in names} == c


def test_bitfields_pack_like_gcc(tmp_path: Path) -> None:
    src = tmp_path / "bits.c"
    src.write_text(
        "#include <stdio.h>\n#include <linux/idxd.h>\n"
        "int main(void){ struct dsa_hw_desc d = {0}; struct dsa_completion_record c = {0};"
        " d.pasid = 0x12345; d.rsvd = 0x5a5; d.priv = 1; d.flags = 0xabcdef; d.opcode = 0x42;"
        " c.invalid_flags = 0x123456; c.rsvd2 = 0x78;"
        ' unsigned char *p = (unsigned char *)&d; for (int i = 0; i < 8; i++) printf("%02x", p[i]);'
        ' p = (unsigned char *)&c; for (int i = 16; i < 20; i++) printf("%02x", p[i]);'
        " return 0; }"
    )
    subprocess.run(["gcc", "-o", str(tmp_path / "bits"), str(src)], check=True)
    out = subprocess.run(
        [str(tmp_path / "bits")], check=True, capture_output=True, text=True
    ).stdout
    d = DsaHwDesc(pasid=0x12345, rsvd=0x5A5, priv=1, flags=0xABCDEF, opcode=0x42)
    c = DsaCompletionRecord(invalid_flags=0x123456, rsvd2=0x78)
    assert out == d.to_bytes()[:8].hex() + c.to_bytes()[16:20].hex()


@pytest.mark.parametrize("op", list(idxd.dsa_opcode))
def test_each_opcode_round_trips_its_fields(op: idxd.dsa_opcode) -> None:
    d = DsaHwDesc(opcode=op, flags=0x8, completion_addr=0x40, src_addr=1, dst_addr=2, xfer_size=3)
    d.op_specific = bytes(range(24))
    again = DsaHwDesc.from_bytes(d.to_bytes())
    assert again == d and again.opcode == op and again.to_bytes()[7] == op
    assert (again.src_addr, again.dst_addr, again.xfer_size) == (1, 2, 3)
    assert again.desc_list_addr == again.pattern == again.rdback_addr == 1
    assert again.src2_addr == again.comp_pattern == again.rdback_addr2 == 2
    assert again.desc_count == 3 and again.crc_seed == int.from_bytes(bytes(range(4)), "little")
    assert hash(again) == hash(d) and "DsaHwDesc" in repr(d)


def test_struct_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="pasid"):
        DsaHwDesc(pasid=1 << 20)
    with pytest.raises(ValueError, match="op_specific"):
        DsaHwDesc(op_specific=b"x")
    with pytest.raises(TypeError):
        DsaHwDesc(nonsense=1)
    with pytest.raises(ValueError, match="64 bytes"):
        DsaHwDesc.from_bytes(b"")
    assert DsaHwDesc() != DsaCompletionRecord()
    assert DsaHwDesc.pasid.layout == (0, 4, 0, 20)


def test_every_constant_has_the_uapi_value(tmp_path: Path) -> None:
    """Opcodes, completion statuses, driver command statuses and descriptor flags
    equal the enumerators and macros of linux/idxd.h, compiled with gcc."""
    consts = {
        name: int(value)
        for enum_cls in (idxd.dsa_opcode, idxd.dsa_completion_status, idxd.idxd_scmd_stat)
        for name, value in enum_cls.__members__.items()
    }
    consts |= {n: getattr(idxd, n) for n in dir(idxd) if n.startswith("IDXD_OP_FLAG_")}
    body = "\n".join(f'  printf("{n} %llu\\n", (unsigned long long)({n}));' for n in consts)
    src = tmp_path / "consts.c"
    src.write_text(f"#include <stdio.h>\n#include <linux/idxd.h>\nint main(void) {{\n{body}\n}}\n")
    exe = tmp_path / "consts"
    subprocess.run(["gcc", "-o", str(exe), str(src)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    assert {n: int(v) for n, v in (line.split() for line in out.splitlines())} == consts
    assert idxd.DSA_OPCODE_MEMMOVE is idxd.dsa_opcode.DSA_OPCODE_MEMMOVE
