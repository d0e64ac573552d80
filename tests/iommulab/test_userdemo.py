"""``iommulab demo --user``: a process's block-on-fault memmove, as a user runs it —
page requests and responses printed in order, as many responses as requests, no
stale use, the bytes right; on the ``smmuv3`` machine the user WQ cannot exist."""

from __future__ import annotations

import re

import pytest

from iommulab import cli


def test_demo_user_prints_requests_responses_and_passes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["demo", "--user"]) == 0
    out = capsys.readouterr().out
    events = re.findall(r"hw_vtd:(page_request|prg_response): .*prgi=(0x[0-9a-f]+)", out)
    # request then its response, group by group, in time order
    assert events[:4] == [
        ("page_request", "0x0"),
        ("prg_response", "0x0"),
        ("page_request", "0x1"),
        ("prg_response", "0x1"),
    ]
    pages = 2 << 20 >> 12
    assert f"page requests:  {pages}\n" in out and f"responses:      {pages}\n" in out
    assert "stale uses:     0" in out and "IOMMU faults:   0" in out
    assert "completion:     status 0x01" in out and "bytes:          right" in out
    assert "result: PASS" in out


def test_demo_user_on_smmuv3_fails_cleanly_without_sva(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "--user", "--machine", "smmuv3"]) == 1
    out = capsys.readouterr().out
    assert "no user WQ on this machine" in out and "(no user SVA)" in out
    assert "result: FAIL" in out
