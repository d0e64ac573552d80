"""drivers/dma/idxd/sysfs.c and accel-config: configuring groups, engines and WQs.

Two front doors over the same checks:

- attribute stores, one knob at a time, as writing the sysfs files does
  (:func:`wq_store`, :func:`group_store`, :func:`engine_store`,
  :func:`device_store`): refused with EPERM while the object is enabled, EINVAL
  naming the field for a bad value;
- a whole configuration in accel-config's JSON layout (``save-config`` output:
  a list of devices, each with ``groups``, each with ``grouped_workqueues`` and
  ``grouped_engines``) through :func:`idxd_load_config` / :func:`idxd_save_config`.
  A loaded configuration is complete: objects it does not list are
  unconfigured. Everything is checked before anything changes, so a bad file
  leaves the device disabled and its configuration as it was.

:func:`idxd_enable` / :func:`idxd_disable` are accel-config's ``enable-device``
+ ``enable-wq`` and ``disable-wq`` + ``disable-device``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from attrs import evolve

from drivers.idxd import registers as regs
from drivers.idxd.cdev import idxd_user_drv_probe, idxd_user_drv_remove
from drivers.idxd.device import (
    idxd_device_drv_probe,
    idxd_device_drv_remove,
    idxd_drv_disable_wq,
    idxd_drv_enable_wq,
)
from drivers.idxd.dma import idxd_unregister_dma_channel, idxd_wq_register_dmaengine
from drivers.idxd.idxd import (
    IDXD_DEV_ENABLED,
    IDXD_ENQCMDS_MAX_RETRIES,
    IDXD_WQ_ENABLED,
    IDXD_WQT_KERNEL,
    IDXD_WQT_USER,
    WQ_NAME_SIZE,
    WQ_TYPES,
    IdxdDevice,
    IdxdEngine,
    IdxdGroup,
    IdxdWq,
)
from kernel.errno import EINVAL, EOPNOTSUPP, EPERM, KernelError

WQ_KEYS = {
    "dev",
    "mode",
    "size",
    "group_id",
    "priority",
    "block_on_fault",
    "prs_disable",
    "max_batch_size",
    "max_transfer_size",
    "threshold",
    "type",
    "name",
    "driver_name",
    "enqcmds_retries",
}
GROUP_KEYS = {
    "dev",
    "read_buffers_reserved",
    "read_buffers_allowed",
    "use_read_buffer_limit",
    "traffic_class_a",
    "traffic_class_b",
    "desc_progress_limit",
    "batch_progress_limit",
    "grouped_workqueues",
    "grouped_engines",
}
ENGINE_KEYS = {"dev", "group_id"}
DEVICE_KEYS = {"dev", "read_buffer_limit", "groups"}
DEFAULT_MAX_TRANSFER = 64 << 20
"""Default kernel WQs take copies up to 64 MiB in one descriptor (accel-config's
own default is 2 MiB); larger requests are refused at prep time, as in Linux."""


def _int(where: str, value: object, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str):
            try:
                value = int(value, 0)
            except ValueError:
                raise EINVAL(f"{where}: expected an integer, got {value!r}") from None
        else:
            raise EINVAL(f"{where}: expected an integer, got {value!r}")
    assert isinstance(value, int)
    if not lo <= value <= hi:
        raise EINVAL(f"{where}: {value} outside {lo}..{hi}")
    return value


def _pow2_shift(where: str, value: object, hi_shift: int) -> int:
    v = _int(where, value, 1, 1 << hi_shift)
    return (v - 1).bit_length()


# -- attribute stores -------------------------------------------------------------------


def _wq_apply(wq: IdxdWq, key: str, value: object) -> None:
    """Validate one WQ attribute against the device and set it on ``wq``."""
    idxd = wq.idxd
    where = f"{wq.name_dev}.{key}"
    if key == "mode":
        if value not in ("dedicated", "shared"):
            raise EINVAL(f"{where}: expected dedicated or shared, got {value!r}")
        wq.dedicated = value == "dedicated"
    elif key == "size":
        wq.size = _int(where, value, 0, idxd.max_wq_size)
    elif key == "group_id":
        wq.group_id = _int(where, value, -1, idxd.max_groups - 1)
    elif key == "priority":
        wq.priority = _int(where, value, 1, 15)
    elif key == "block_on_fault":
        wq.block_on_fault = bool(_int(where, value, 0, 1))
    elif key == "prs_disable":  # wq_prs_disable_store
        if not regs.WQCAP_WQ_PRS_SUPPORT.get(idxd.hw.wq_cap):
            raise EOPNOTSUPP(f"{where}: the device has no per-WQ PRS disable")
        wq.prs_disable = bool(_int(where, value, 0, 1))
    elif key == "max_batch_size":
        wq.max_batch_shift = _pow2_shift(where, value, idxd.max_batch_size.bit_length() - 1)
    elif key == "max_transfer_size":
        wq.max_xfer_shift = _pow2_shift(where, value, idxd.max_xfer_bytes.bit_length() - 1)
    elif key == "threshold":
        wq.threshold = _int(where, value, 0, 0xFFFF)
    elif key == "type":
        if value not in WQ_TYPES:
            raise EINVAL(f"{where}: expected one of {', '.join(WQ_TYPES)}, got {value!r}")
        wq.type = str(value)
    elif key == "name":
        if not isinstance(value, str) or len(value) >= WQ_NAME_SIZE:
            raise EINVAL(f"{where}: expected a name shorter than {WQ_NAME_SIZE}")
        wq.name = value
    elif key == "driver_name":
        if value not in ("", "dmaengine", "user"):
            raise EINVAL(f"{where}: unknown driver {value!r}")
        wq.driver_name = str(value)
    elif key == "enqcmds_retries":
        wq.enqcmds_retries = _int(where, value, 0, IDXD_ENQCMDS_MAX_RETRIES)
    else:
        raise EINVAL(f"{where}: unknown attribute {key!r}")


def _group_apply(grp: IdxdGroup, idxd: IdxdDevice, key: str, value: object) -> None:
    where = f"group{idxd.id}.{grp.id}.{key}"
    if key == "read_buffers_reserved":
        grp.rdbufs_reserved = _int(where, value, 0, idxd.max_rdbufs)
    elif key == "read_buffers_allowed":
        grp.rdbufs_allowed = _int(where, value, 0, idxd.max_rdbufs)
    elif key == "use_read_buffer_limit":
        grp.use_rdbuf_limit = bool(_int(where, value, 0, 1))
    elif key == "traffic_class_a":
        grp.tc_a = _int(where, value, -1, 7)
    elif key == "traffic_class_b":
        grp.tc_b = _int(where, value, -1, 7)
    elif key == "desc_progress_limit":
        grp.desc_progress_limit = _int(where, value, 0, 3)
    elif key == "batch_progress_limit":
        grp.batch_progress_limit = _int(where, value, 0, 3)
    else:
        raise EINVAL(f"{where}: unknown attribute {key!r}")


def _check_device(idxd: IdxdDevice, wqs: list[IdxdWq], sizes_only: bool = False) -> None:
    """Whole-configuration checks: total WQ size, kernel WQs in a group, shared
    WQs only with PASID, threshold below size (a single store checks only the
    total size, as ``wq_size_store`` does: the rest may still be set later)."""
    total = 0
    for wq in wqs:
        total += wq.size
        if total > idxd.max_wq_size:
            raise EINVAL(
                f"{wq.name_dev}.size: WQ sizes add up to {total}, over the device total "
                f"{idxd.max_wq_size}"
            )
        if sizes_only:
            continue
        if wq.type == IDXD_WQT_KERNEL and wq.size and wq.group_id < 0:
            raise EINVAL(f"{wq.name_dev}.group_id: kernel WQ is not in a group")
        if wq.shared and wq.size and not idxd.wq_shared_supported(wq):
            why = "no user SVA" if wq.type == IDXD_WQT_USER else "no system PASID"
            raise EOPNOTSUPP(f"{wq.name_dev}.mode: shared WQ needs PASID support ({why})")
        if wq.shared and wq.size and not 0 < wq.threshold <= wq.size:
            raise EINVAL(f"{wq.name_dev}.threshold: must be in 1..size for a shared WQ")


def wq_store(wq: IdxdWq, **attrs: object) -> None:
    """Write WQ attributes (``/sys/bus/dsa/devices/wqX.Y/<attr>``); EPERM while
    the WQ is enabled."""
    if wq.state == IDXD_WQ_ENABLED:
        raise EPERM(f"{wq.name_dev}: disable the WQ first")
    staged = evolve(wq)
    for key, value in attrs.items():
        _wq_apply(staged, key, value)
    _check_device(wq.idxd, [staged if w is wq else w for w in wq.idxd.wqs], sizes_only=True)
    for key in attrs:
        for f in _WQ_FIELDS[key]:
            setattr(wq, f, getattr(staged, f))


_WQ_FIELDS = {
    "mode": ("dedicated",),
    "size": ("size",),
    "group_id": ("group_id",),
    "priority": ("priority",),
    "block_on_fault": ("block_on_fault",),
    "prs_disable": ("prs_disable",),
    "max_batch_size": ("max_batch_shift",),
    "max_transfer_size": ("max_xfer_shift",),
    "threshold": ("threshold",),
    "type": ("type",),
    "name": ("name",),
    "driver_name": ("driver_name",),
    "enqcmds_retries": ("enqcmds_retries",),
}


def group_store(grp: IdxdGroup, idxd: IdxdDevice, **attrs: object) -> None:
    """Write group attributes; EPERM while the device is enabled."""
    if idxd.state == IDXD_DEV_ENABLED:
        raise EPERM(f"{idxd.name}: disable the device first")
    staged = evolve(grp)
    for key, value in attrs.items():
        _group_apply(staged, idxd, key, value)
    idxd.groups[grp.id] = staged


def engine_store(eng: IdxdEngine, idxd: IdxdDevice, group_id: object) -> None:
    if idxd.state == IDXD_DEV_ENABLED:
        raise EPERM(f"{idxd.name}: disable the device first")
    eng.group_id = _int(f"engine{idxd.id}.{eng.id}.group_id", group_id, -1, idxd.max_groups - 1)


def device_store(idxd: IdxdDevice, read_buffer_limit: object) -> None:
    if idxd.state == IDXD_DEV_ENABLED:
        raise EPERM(f"{idxd.name}: disable the device first")
    idxd.rdbuf_limit = _int(f"{idxd.name}.read_buffer_limit", read_buffer_limit, 0, idxd.max_rdbufs)


# -- whole configurations -----------------------------------------------------------------


def _index(where: str, dev: object, prefix: str, idxd: IdxdDevice, limit: int) -> int:
    if not isinstance(dev, str) or not dev.startswith(f"{prefix}{idxd.id}."):
        raise EINVAL(f"{where}.dev: expected {prefix}{idxd.id}.N, got {dev!r}")
    return _int(f"{where}.dev", dev.split(".", 1)[1], 0, limit - 1)


def _check_keys(where: str, obj: object, allowed: set[str]) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        raise EINVAL(f"{where}: expected an object")
    for key in obj:
        if key not in allowed:
            raise EINVAL(f"{where}.{key}: unknown key")
    return obj


def idxd_load_config(idxd: IdxdDevice, config: object) -> None:
    """accel-config ``load-config``: replace the configuration with ``config``
    (the parsed JSON: a device object or a list holding one for this device)."""
    if idxd.state == IDXD_DEV_ENABLED:
        raise EPERM(f"{idxd.name}: disable the device before loading a configuration")
    if isinstance(config, list):
        mine = [d for d in config if isinstance(d, Mapping) and d.get("dev") == idxd.name]
        if len(mine) != 1:
            raise EINVAL(f"config: expected exactly one entry with dev={idxd.name!r}")
        config = mine[0]
    dev = _check_keys(idxd.name, config, DEVICE_KEYS)
    wqs = [IdxdWq(w.id, idxd) for w in idxd.wqs]
    groups = [IdxdGroup(g.id) for g in idxd.groups]
    engines = [IdxdEngine(e.id) for e in idxd.engines]
    rdbuf_limit = 0
    if "read_buffer_limit" in dev:
        rdbuf_limit = _int(
            f"{idxd.name}.read_buffer_limit", dev["read_buffer_limit"], 0, idxd.max_rdbufs
        )
    groups_in = dev.get("groups", [])
    if not isinstance(groups_in, list):
        raise EINVAL(f"{idxd.name}.groups: expected a list")
    for i, g in enumerate(groups_in):
        where = f"{idxd.name}.groups[{i}]"
        gd = _check_keys(where, g, GROUP_KEYS)
        gid = _index(where, gd.get("dev"), "group", idxd, idxd.max_groups)
        where = f"group{idxd.id}.{gid}"
        for key, value in gd.items():
            if key not in ("dev", "grouped_workqueues", "grouped_engines"):
                _group_apply(groups[gid], idxd, key, value)
        for j, w in enumerate(gd.get("grouped_workqueues", [])):
            wd = _check_keys(f"{where}.grouped_workqueues[{j}]", w, WQ_KEYS)
            wid = _index(
                f"{where}.grouped_workqueues[{j}]", wd.get("dev"), "wq", idxd, idxd.max_wqs
            )
            wqs[wid].group_id = gid
            for key, value in wd.items():
                if key != "dev":
                    _wq_apply(wqs[wid], key, value)
            if wqs[wid].group_id != gid:
                raise EINVAL(f"{wqs[wid].name_dev}.group_id: listed under group {gid}")
        for j, e in enumerate(gd.get("grouped_engines", [])):
            ed = _check_keys(f"{where}.grouped_engines[{j}]", e, ENGINE_KEYS)
            eid = _index(
                f"{where}.grouped_engines[{j}]", ed.get("dev"), "engine", idxd, idxd.max_engines
            )
            engines[eid].group_id = gid
    _check_device(idxd, wqs)
    idxd.rdbuf_limit = rdbuf_limit
    idxd.groups = groups
    idxd.engines = engines
    for old, new in zip(idxd.wqs, wqs, strict=True):
        for fields in _WQ_FIELDS.values():
            for f in fields:
                setattr(old, f, getattr(new, f))


def idxd_load_config_file(idxd: IdxdDevice, path: str | Path) -> None:
    """``accel-config load-config -c FILE``; EINVAL for unreadable or bad JSON."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise EINVAL(f"{path}: cannot read configuration ({exc})") from None
    idxd_load_config(idxd, data)


def idxd_save_config(idxd: IdxdDevice) -> list[dict[str, Any]]:
    """``accel-config save-config``: the configuration as loadable JSON data."""
    groups: list[dict[str, Any]] = []
    for g in idxd.groups:
        wqs = [w for w in idxd.wqs if w.group_id == g.id and w.size]
        engines = [e for e in idxd.engines if e.group_id == g.id]
        if not wqs and not engines:
            continue
        groups.append(
            {
                "dev": f"group{idxd.id}.{g.id}",
                "read_buffers_reserved": g.rdbufs_reserved,
                "read_buffers_allowed": g.rdbufs_allowed,
                "use_read_buffer_limit": int(g.use_rdbuf_limit),
                "traffic_class_a": g.tc_a,
                "traffic_class_b": g.tc_b,
                "desc_progress_limit": g.desc_progress_limit,
                "batch_progress_limit": g.batch_progress_limit,
                "grouped_workqueues": [
                    {
                        "dev": w.name_dev,
                        "mode": "dedicated" if w.dedicated else "shared",
                        "size": w.size,
                        "group_id": w.group_id,
                        "priority": w.priority,
                        "block_on_fault": int(w.block_on_fault),
                        **(
                            {"prs_disable": int(w.prs_disable)}
                            if regs.WQCAP_WQ_PRS_SUPPORT.get(idxd.hw.wq_cap)
                            else {}
                        ),
                        "max_batch_size": 1 << w.max_batch_shift,
                        "max_transfer_size": 1 << w.max_xfer_shift,
                        "threshold": w.threshold,
                        "type": w.type,
                        "name": w.name,
                        "driver_name": w.driver_name,
                        "enqcmds_retries": w.enqcmds_retries,
                    }
                    for w in wqs
                ],
                "grouped_engines": [
                    {"dev": f"engine{idxd.id}.{e.id}", "group_id": e.group_id} for e in engines
                ],
            }
        )
    return [{"dev": idxd.name, "read_buffer_limit": idxd.rdbuf_limit, "groups": groups}]


def idxd_default_config(idxd: IdxdDevice, count: int = 2) -> dict[str, Any]:
    """The kernel's default configuration (used at probe with ``idxd.default_config``):
    ``count`` kernel WQs bound to dmaengine (0 = every WQ the device has), even ones
    dedicated and odd ones shared. Shared WQs need the system PASID; without it they
    are left out. The default ``count`` of 2 gives a dedicated ``dma-dwq`` and, with
    the PASID, a shared ``dma-swq``. WQs are dealt round-robin over as many groups as
    there are engines to give each one (one group when a single WQ or engine), the
    engines split into contiguous blocks."""
    shared_ok = idxd.pasid_enabled and idxd.max_wqs > 1
    count = min(count or idxd.max_wqs, idxd.max_wqs)
    modes = ["shared" if i % 2 else "dedicated" for i in range(count)]
    if not shared_ok:
        modes = [m for m in modes if m == "dedicated"]
    ngroups = min(idxd.max_groups, idxd.max_engines, len(modes))
    size = min(16, idxd.max_wq_size // len(modes))

    def name(i: int, mode: str) -> str:
        base = "dma-swq" if mode == "shared" else "dma-dwq"
        first = i == (1 if mode == "shared" else 0)
        return base if first else f"{base}{i}"

    def wq(i: int, mode: str) -> dict[str, Any]:
        d: dict[str, Any] = {
            "dev": f"wq{idxd.id}.{i}",
            "mode": mode,
            "size": size,
            "priority": 10,
            "max_transfer_size": min(idxd.max_xfer_bytes, DEFAULT_MAX_TRANSFER),
            "type": "kernel",
            "name": name(i, mode),
            "driver_name": "dmaengine",
        }
        if mode == "shared":
            d["threshold"] = max(1, size - 1)
        return d

    groups: list[dict[str, Any]] = []
    for g in range(ngroups):
        lo, hi = g * idxd.max_engines // ngroups, (g + 1) * idxd.max_engines // ngroups
        groups.append(
            {
                "dev": f"group{idxd.id}.{g}",
                "grouped_workqueues": [
                    wq(i, mode) for i, mode in enumerate(modes) if i % ngroups == g
                ],
                "grouped_engines": [{"dev": f"engine{idxd.id}.{e}"} for e in range(lo, hi)],
            }
        )
    return {"dev": idxd.name, "groups": groups}


def idxd_enable(idxd: IdxdDevice) -> None:
    """``accel-config enable-device`` then ``enable-wq`` for every configured WQ
    (and its dmaengine channel); on failure everything is disabled again."""
    _check_device(idxd, idxd.wqs)
    idxd_device_drv_probe(idxd)
    try:
        for wq in idxd.wqs:
            if wq.size and wq.type == IDXD_WQT_USER:
                idxd_user_drv_probe(wq)
            elif wq.size and wq.type != "none":
                idxd_drv_enable_wq(wq)
                idxd_wq_register_dmaengine(wq)
    except KernelError:
        idxd_disable(idxd)
        raise


def idxd_disable(idxd: IdxdDevice) -> None:
    """``accel-config disable-wq`` for every WQ, then ``disable-device``."""
    for wq in idxd.wqs:
        idxd_user_drv_remove(wq)
        idxd_unregister_dma_channel(wq)
        idxd_drv_disable_wq(wq)
    idxd_device_drv_remove(idxd)
