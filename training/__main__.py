"""`python3 -m training <command>`. Re-runs itself under Debian's /usr/bin/python3 when the python3 on PATH
cannot import torch (on our machines PATH's python3 is a separate build that does not see Debian's packages)."""
import os
import sys

try:
    import torch  # noqa: F401
except ImportError:
    debian = "/usr/bin/python3"
    if os.path.realpath(sys.executable) != os.path.realpath(debian) and os.path.exists(debian):
        os.execv(debian, [debian, "-m", "training", *sys.argv[1:]])
    sys.exit("error: PyTorch is not installed (Debian: apt-get install python3-torch)")

from .cli import main  # noqa: E402

sys.exit(main())
