"""PCIe Page Request Interface, function side (PCIe Base spec ch. 10; capability 0x13).

A function whose ATS Translation Request completed with R=W=0 may ask the host to make
the pages resident with a *Page Request* message (page address, PRG index, Last, R, W,
and in the PASID prefix PASID, Execute and Privileged). The host answers each page
request group with one *PRG Response* message (Success, Invalid Request, Response
Failure); the function then retries its Translation Request, or gives up.

:class:`PriPort` is the PRI of one :class:`hw.pci.PciFunction` that has the capability.
What the capability registers do here:

- **Control** (+0x04): Enable (bit 0) lets the function send page requests; going from
  0 to 1 clears Stopped, Response Failure and Unexpected PRG Index. Reset (bit 1, reads
  0) written while Enable is or becomes 0 drops every outstanding request: their work
  fails as if answered Response Failure (the function will take no response for them).
- **Status** (+0x06): Response Failure (bit 0, RW1C), Unexpected PRG Index (bit 1,
  RW1C), Stopped (bit 8, RO: Enable is 0 and nothing is outstanding; 1 at reset), PRG
  Response PASID Required (bit 15, RO, a property of the function).
- **Outstanding Page Request Capacity** (+0x08, RO) and **Allocation** (+0x0C, RW):
  the function never has more page requests outstanding than the allocation. A
  request beyond it waits in the function ("queued for transmission") and is sent when
  a response frees a credit; an allocation of 0 sends nothing.

Clearing Enable with requests outstanding: no new request is made, the
ones transmitted or queued for transmission still go out and are answered; Stopped
turns 1 when the last one is. A PRG Response for an index with nothing outstanding
sets Unexpected PRG Index and is otherwise ignored. A Response Failure sets Response
Failure and fails every outstanding group of the function (it expects no further
responses); until software re-enables PRI no request is made. A reserved response code
is taken as Response Failure (the model's reading; unverified).

A group is one page by default (Last = 1), which is what the DSA asks for; a caller
may ask for ``pages`` consecutive pages as one group (the first ones with Last = 0,
all with the same PRG index). Credits count page requests, not groups; a group larger
than the allocation is never sent (software must allocate enough). PRG indices are
handed out round-robin over the 9-bit space among the free ones, so at most 512
groups are outstanding.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from attrs import define, frozen

if TYPE_CHECKING:
    from hw.pci import PciFunction

PCI_PRI_CTRL = 0x04
PCI_PRI_STATUS = 0x06
PCI_PRI_MAX_REQ = 0x08
PCI_PRI_ALLOC_REQ = 0x0C
PCI_PRI_CTRL_ENABLE = 0x0001
PCI_PRI_CTRL_RESET = 0x0002
PCI_PRI_STATUS_RF = 0x0001
PCI_PRI_STATUS_UPRGI = 0x0002
PCI_PRI_STATUS_STOPPED = 0x0100
PCI_PRI_STATUS_PASID = 0x8000

PRG_RESP_SUCCESS = 0x0
PRG_RESP_INVALID = 0x1
PRG_RESP_FAILURE = 0xF
PRG_INDEX_COUNT = 512

Callback = Callable[[int], None]
"""Called with the response code that ended a page request group."""


@frozen
class PageRequest:
    """One Page Request message as the translation agent receives it."""

    rid: int
    pasid: int | None
    priv: bool
    exe: bool
    addr: int
    read: bool
    write: bool
    prgi: int
    last: bool = True


class PriAgent(Protocol):
    """The IOMMU side: where a function's page requests go (``hw.vtd.VtdUnit``)."""

    def page_request(self, req: PageRequest) -> None: ...


@define(slots=True)
class PriStats:
    requests: int = 0
    """Page requests transmitted."""
    held: int = 0
    """Page requests that waited for a credit (allocation exhausted)."""
    responses: int = 0
    """PRG responses matched to an outstanding group."""
    unexpected: int = 0
    """PRG responses for an index with nothing outstanding."""
    failures: int = 0
    """Response Failure (or reserved code) responses."""


@define(slots=True, eq=False)
class _Pending:
    pasid: int | None
    priv: bool
    exe: bool
    addr: int
    write: bool
    done: Callback
    pages: int = 1


class PriPort:
    """The Page Request Interface of one function (its PRI capability at ``cap``)."""

    def __init__(self, fn: PciFunction, cap: int) -> None:
        self.fn = fn
        self.cap = cap
        self.outstanding: dict[int, _Pending] = {}
        """PRG index -> the group waiting for its response."""
        self.queued: deque[_Pending] = deque()
        """Requests waiting for a credit, in order."""
        self.stats = PriStats()
        self._next = 0
        self._ctl = 0

    # -- registers -----------------------------------------------------------------------
    def _status(self) -> int:
        return self.fn.config_read(self.cap + PCI_PRI_STATUS, 2)

    def _set_status(self, set_bits: int = 0, clear_bits: int = 0) -> None:
        st = (self._status() | set_bits) & ~clear_bits
        self.fn.config[self.cap + PCI_PRI_STATUS : self.cap + PCI_PRI_STATUS + 2] = st.to_bytes(
            2, "little"
        )

    @property
    def enabled(self) -> bool:
        return bool(self._ctl & PCI_PRI_CTRL_ENABLE)

    @property
    def allocation(self) -> int:
        return self.fn.config_read(self.cap + PCI_PRI_ALLOC_REQ, 4)

    @property
    def response_failed(self) -> bool:
        return bool(self._status() & PCI_PRI_STATUS_RF)

    def control_written(self) -> None:
        """The Control register was written: act on Enable and Reset."""
        cfg = self.fn.config
        off = self.cap + PCI_PRI_CTRL
        ctl = int.from_bytes(cfg[off : off + 2], "little")
        was = self._ctl & PCI_PRI_CTRL_ENABLE
        reset = ctl & PCI_PRI_CTRL_RESET
        ctl &= ~PCI_PRI_CTRL_RESET  # reads as 0
        cfg[off : off + 2] = ctl.to_bytes(2, "little")
        self._ctl = ctl
        if ctl & PCI_PRI_CTRL_ENABLE and not was:
            self._set_status(
                clear_bits=PCI_PRI_STATUS_RF | PCI_PRI_STATUS_UPRGI | PCI_PRI_STATUS_STOPPED
            )
        elif reset and not ctl & PCI_PRI_CTRL_ENABLE:
            self._drop_all()
        self._update_stopped()

    def _update_stopped(self) -> None:
        if not self.enabled and not self.outstanding and not self.queued:
            self._set_status(PCI_PRI_STATUS_STOPPED)

    def _drop_all(self) -> None:
        groups = list(self.outstanding.values()) + list(self.queued)
        self.outstanding.clear()
        self.queued.clear()
        for g in groups:
            g.done(PRG_RESP_FAILURE)

    # -- requests ------------------------------------------------------------------------
    def request(
        self,
        pasid: int | None,
        priv: bool,
        exe: bool,
        addr: int,
        write: bool,
        done: Callback,
        pages: int = 1,
    ) -> bool:
        """Ask for the page at ``addr`` (and the ``pages - 1`` after it, as one group);
        ``done(code)`` runs when the group is answered (possibly before this returns).
        False: PRI is disabled or failed, or no agent takes page requests, so nothing
        was asked."""
        if not self.enabled or self.response_failed or self._agent() is None or pages < 1:
            return False
        self.queued.append(_Pending(pasid, priv, exe, addr & ~0xFFF, write, done, pages))
        if self.in_flight + pages > self.allocation:
            self.stats.held += 1
        self._pump()
        return True

    @property
    def in_flight(self) -> int:
        """Page requests outstanding (the credits in use)."""
        return sum(g.pages for g in self.outstanding.values())

    def _agent(self) -> PriAgent | None:
        m = self.fn.machine
        agent = m.iommu_for(self.fn.addr) if m is not None else None
        if agent is None or not hasattr(agent, "page_request"):
            return None
        return agent  # type: ignore[return-value]

    def _free_index(self) -> int:
        i = self._next
        while i in self.outstanding:
            i = (i + 1) % PRG_INDEX_COUNT
        self._next = (i + 1) % PRG_INDEX_COUNT
        return i

    def _pump(self) -> None:
        """Transmit queued requests while credits last."""
        agent = self._agent()
        rid = self.fn.addr.rid
        while (
            agent is not None
            and self.queued
            and len(self.outstanding) < PRG_INDEX_COUNT
            and self.in_flight + self.queued[0].pages <= self.allocation
        ):
            g = self.queued.popleft()
            prgi = self._free_index()
            self.outstanding[prgi] = g
            self.stats.requests += g.pages
            for i in range(g.pages):
                addr = g.addr + 4096 * i
                last = i == g.pages - 1
                agent.page_request(
                    PageRequest(rid, g.pasid, g.priv, g.exe, addr, not g.write, g.write, prgi, last)
                )

    # -- responses -----------------------------------------------------------------------
    def response(self, prgi: int, code: int, pasid: int | None) -> None:
        """A PRG Response message for group ``prgi``."""
        g = self.outstanding.pop(prgi, None)
        if g is None:
            self.stats.unexpected += 1
            self._set_status(PCI_PRI_STATUS_UPRGI)
            return
        self.stats.responses += 1
        if code not in (PRG_RESP_SUCCESS, PRG_RESP_INVALID):
            self.stats.failures += 1
            self._set_status(PCI_PRI_STATUS_RF)
            g.done(PRG_RESP_FAILURE)
            self._drop_all()
        else:
            g.done(code)
            self._pump()
        self._update_stopped()
