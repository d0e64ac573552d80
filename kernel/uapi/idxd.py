"""include/uapi/linux/idxd.h: DSA descriptor and completion-record layouts, opcodes,
flags and status codes.

The one Python home of this ABI is ``hw.uapi.idxd`` (the device model parses the
same bytes); this module is the kernel's view of it, so drivers import
``kernel.uapi.idxd`` and never ``hw``. Departure from DESIGN §1 (kernel imports
only ``hw.bus``): ``kernel.uapi`` may also import ``hw.uapi`` — a UAPI header is an
ABI both sides compile against, and two copies would drift.
"""

from hw.uapi.idxd import *  # noqa: F403
