"""Suite-wide settings.

Under CI (``CI`` set) hypothesis runs derandomized: the same examples every
run, so a submission's result does not depend on luck.  Locally it explores
randomly (and stores failures in .hypothesis/ for replay).
"""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")
