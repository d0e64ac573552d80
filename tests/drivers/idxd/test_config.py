"""Configuration like accel-config: attribute stores, JSON load/save, the default
kernel configuration, and bad input (a clear error naming the field, the device
left disabled and its configuration unchanged)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from drivers.idxd.idxd import IDXD_DEV_DISABLED, IDXD_DEV_ENABLED
from drivers.idxd.sysfs import (
    device_store,
    engine_store,
    group_store,
    idxd_default_config,
    idxd_disable,
    idxd_enable,
    idxd_load_config,
    idxd_load_config_file,
    idxd_save_config,
    wq_store,
)
from hw.dsa import registers as hwregs
from hw.dsa.device import DsaDevice
from kernel.errno import EINVAL, EOPNOTSUPP, EPERM
from tests.drivers.idxd.conftest import Boot, direct_spec, dsa0, dsa_hw, mock_spec


def one_wq(**wq: Any) -> dict[str, Any]:
    w = {
        "dev": "wq0.0",
        "mode": "dedicated",
        "size": 8,
        "priority": 5,
        "type": "kernel",
        "name": "k",
        "driver_name": "dmaengine",
    }
    w.update(wq)
    return {
        "dev": "dsa0",
        "groups": [
            {
                "dev": "group0.0",
                "grouped_workqueues": [w],
                "grouped_engines": [{"dev": "engine0.0"}],
            }
        ],
    }


@pytest.fixture
def idle(make_kernel: Boot) -> None:
    make_kernel(cmdline="idxd.default_config=0")


def test_loaded_configuration_is_programmed_into_wqcfg_and_grpcfg(
    make_kernel: Boot, idle: None
) -> None:
    from kernel.boot import current_kernel

    idxd_load_config(dsa0(), [one_wq(size=8, priority=5)])
    idxd_enable(dsa0())
    hw = dsa_hw(current_kernel())
    assert hw.wqs[0].size == 8 and hw.wqs[0].dedicated and hw.wqs[0].enabled
    assert hw.grpcfg(0)[:2] == (0b1, 0b1)
    assert dsa0().state == IDXD_DEV_ENABLED


def test_save_config_round_trips_through_load(idle: None) -> None:
    idxd_load_config(dsa0(), one_wq(threshold=0, max_transfer_size=1 << 16))
    saved = idxd_save_config(dsa0())
    idxd_load_config(dsa0(), json.loads(json.dumps(saved)))
    assert idxd_save_config(dsa0()) == saved
    assert saved[0]["groups"][0]["grouped_workqueues"][0]["max_transfer_size"] == 1 << 16


def test_config_file_is_loaded_at_probe(make_kernel: Boot, tmp_path: Path) -> None:
    path = tmp_path / "dsa.conf"
    path.write_text(json.dumps([one_wq(size=4)]))
    make_kernel(cmdline=f"idxd.config={path}")
    assert dsa0().wqs[0].size == 4 and dsa0().state == IDXD_DEV_ENABLED


def test_attribute_stores_set_fields(idle: None) -> None:
    idxd = dsa0()
    wq_store(
        idxd.wqs[2],
        size=4,
        mode="dedicated",
        group_id=1,
        priority=3,
        type="kernel",
        name="x",
        driver_name="dmaengine",
        block_on_fault=1,
        max_batch_size=32,
        enqcmds_retries=5,
    )
    group_store(
        idxd.groups[1], idxd, read_buffers_reserved=2, traffic_class_a=1, desc_progress_limit=1
    )
    engine_store(idxd.engines[3], idxd, 1)
    device_store(idxd, 4)
    w = idxd.wqs[2]
    assert (w.size, w.group_id, w.priority, w.max_batch_shift, w.enqcmds_retries) == (4, 1, 3, 5, 5)
    assert idxd.groups[1].rdbufs_reserved == 2 and idxd.engines[3].group_id == 1
    idxd_enable(idxd)
    assert dsa_hw_now().wqs[2].enabled and dsa_hw_now().wqs[2].bof


def dsa_hw_now() -> DsaDevice:
    from kernel.boot import current_kernel

    return dsa_hw(current_kernel())


def test_stores_are_refused_while_enabled(make_kernel: Boot) -> None:
    make_kernel()
    idxd = dsa0()
    with pytest.raises(EPERM, match=r"wq0\.0: disable the WQ first"):
        wq_store(idxd.wqs[0], size=4)
    with pytest.raises(EPERM):
        group_store(idxd.groups[0], idxd, traffic_class_b=2)
    with pytest.raises(EPERM):
        engine_store(idxd.engines[0], idxd, 1)
    with pytest.raises(EPERM):
        device_store(idxd, 1)
    with pytest.raises(EPERM):
        idxd_load_config(idxd, one_wq())


def test_default_config_without_pasid_has_only_the_dedicated_wq(idle: None) -> None:
    cfg = idxd_default_config(dsa0())
    wqs = [w for g in cfg["groups"] for w in g["grouped_workqueues"]]
    assert [w["mode"] for w in wqs] == ["dedicated"]


def test_default_config_for_every_wq_without_pasid_keeps_the_dedicated_half(idle: None) -> None:
    cfg = idxd_default_config(dsa0(), 0)
    wqs = [w for g in cfg["groups"] for w in g["grouped_workqueues"]]
    assert sorted(w["mode"] for w in wqs) == ["dedicated"] * 4
    assert len(cfg["groups"]) == 4
    engines = [e["dev"] for g in cfg["groups"] for e in g["grouped_engines"]]
    assert sorted(engines) == [f"engine0.{e}" for e in range(4)]


def test_every_wq_with_a_system_pasid_boots_enabled_alternating_modes(make_kernel: Boot) -> None:
    make_kernel(mock_spec(), "idxd.default_wqs=0")
    idxd = dsa0()
    assert [wq.dedicated for wq in idxd.wqs] == [True, False] * 4
    assert all(wq.dma_chan is not None for wq in idxd.wqs)
    assert [wq.name for wq in idxd.wqs][:3] == ["dma-dwq", "dma-swq", "dma-dwq2"]
    assert {wq.size for wq in idxd.wqs} == {16}
    per_group = sorted(sum(1 for wq in idxd.wqs if wq.group_id == g) for g in range(4))
    assert per_group == [2, 2, 2, 2]


def test_three_default_wqs_on_a_pasid_device(make_kernel: Boot) -> None:
    make_kernel(mock_spec(), "idxd.default_wqs=3")
    idxd = dsa0()
    enabled = [wq for wq in idxd.wqs if wq.dma_chan is not None]
    assert [wq.dedicated for wq in enabled] == [True, False, True]
    assert {wq.size for wq in enabled} == {min(16, idxd.max_wq_size // 3)}


BAD: list[tuple[str, Any, type[Exception], str]] = [
    ("wq size over total", one_wq(size=129), EINVAL, r"wq0\.0\.size: 129 outside 0\.\.128"),
    (
        "unknown wq key",
        one_wq(colour="red"),
        EINVAL,
        r"grouped_workqueues\[0\]\.colour: unknown key",
    ),
    ("unknown device key", {"dev": "dsa0", "speed": 1}, EINVAL, r"dsa0\.speed: unknown key"),
    ("shared wq without pasid", one_wq(mode="shared", threshold=4), EOPNOTSUPP, r"wq0\.0\.mode"),
    ("bad mode", one_wq(mode="fast"), EINVAL, r"wq0\.0\.mode: expected dedicated or shared"),
    ("bad priority", one_wq(priority=0), EINVAL, r"wq0\.0\.priority"),
    ("bad type", one_wq(type="mdev"), EINVAL, r"wq0\.0\.type"),
    ("bad driver", one_wq(driver_name="crypto"), EINVAL, r"wq0\.0\.driver_name"),
    ("bad name", one_wq(name=5), EINVAL, r"wq0\.0\.name"),
    ("size not an int", one_wq(size="lots"), EINVAL, r"wq0\.0\.size: expected an integer"),
    ("size a bool", one_wq(size=True), EINVAL, r"wq0\.0\.size: expected an integer"),
    ("wq in another group", one_wq(group_id=1), EINVAL, r"wq0\.0\.group_id: listed under group 0"),
    ("wrong device", [{"dev": "dsa7"}], EINVAL, r"exactly one entry with dev='dsa0'"),
    ("not an object", [{"dev": "dsa0", "groups": [7]}], EINVAL, r"groups\[0\]: expected an object"),
    ("groups not a list", {"dev": "dsa0", "groups": {}}, EINVAL, r"dsa0\.groups: expected a list"),
    ("bad group dev", {"dev": "dsa0", "groups": [{"dev": "grp"}]}, EINVAL, r"groups\[0\]\.dev"),
    ("group index", {"dev": "dsa0", "groups": [{"dev": "group0.9"}]}, EINVAL, r"9 outside 0\.\.3"),
    (
        "group attr",
        {"dev": "dsa0", "groups": [{"dev": "group0.0", "traffic_class_a": 9}]},
        EINVAL,
        r"group0\.0\.traffic_class_a",
    ),
    (
        "engine key",
        {
            "dev": "dsa0",
            "groups": [{"dev": "group0.0", "grouped_engines": [{"dev": "engine0.0", "x": 1}]}],
        },
        EINVAL,
        r"grouped_engines\[0\]\.x: unknown key",
    ),
    ("rdbuf limit", {"dev": "dsa0", "read_buffer_limit": 1000}, EINVAL, r"read_buffer_limit"),
    ("threshold over size", one_wq(mode="shared", size=4, threshold=9), EOPNOTSUPP, r"wq0\.0"),
    ("xfer over max", one_wq(max_transfer_size=1 << 40), EINVAL, r"max_transfer_size"),
]


@pytest.mark.parametrize(("what", "config", "exc", "msg"), BAD, ids=[b[0] for b in BAD])
def test_bad_configuration_is_refused_naming_the_field(
    idle: None, what: str, config: Any, exc: type[Exception], msg: str
) -> None:
    before = idxd_save_config(dsa0())
    with pytest.raises(exc, match=msg):
        idxd_load_config(dsa0(), config)
    assert idxd_save_config(dsa0()) == before
    assert dsa0().state == IDXD_DEV_DISABLED
    assert dsa_hw_now().state == hwregs.GENSTS_DISABLED


def test_kernel_wq_without_group_is_refused_at_enable(idle: None) -> None:
    wq_store(dsa0().wqs[0], size=4, type="kernel", name="k")
    with pytest.raises(EINVAL, match=r"wq0\.0\.group_id: kernel WQ is not in a group"):
        idxd_enable(dsa0())
    assert dsa0().state == IDXD_DEV_DISABLED


def test_wq_sizes_over_the_total_are_refused_by_the_store(idle: None) -> None:
    wq_store(dsa0().wqs[0], size=100)
    with pytest.raises(
        EINVAL, match=r"wq0\.1\.size: WQ sizes add up to 140, over the device total 128"
    ):
        wq_store(dsa0().wqs[1], size=40)
    assert dsa0().wqs[1].size == 0


def test_unreadable_config_file_is_einval(idle: None, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(EINVAL, match="cannot read configuration"):
        idxd_load_config_file(dsa0(), bad)


def test_shared_wq_needs_a_threshold_at_enable(make_kernel: Boot) -> None:
    make_kernel(mock_spec(), "idxd.default_config=0")
    idxd_load_config(dsa0(), one_wq(mode="shared", threshold=2))
    dsa0().wqs[0].threshold = 0
    with pytest.raises(EINVAL, match=r"wq0\.0\.threshold"):
        idxd_enable(dsa0())
    assert dsa0().state == IDXD_DEV_DISABLED


def test_disable_then_enable_again(make_kernel: Boot) -> None:
    make_kernel(direct_spec())
    idxd_disable(dsa0())
    assert dsa0().state == IDXD_DEV_DISABLED
    idxd_enable(dsa0())
    assert dsa0().state == IDXD_DEV_ENABLED
