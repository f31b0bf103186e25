"""Opening a URL imports only its scheme's transport (start-up of `scmt copy`)."""

import subprocess
import sys


def test_a_file_url_loads_neither_the_nbd_client_nor_the_agent(tmp_path):
    img = tmp_path / "d.img"
    img.write_bytes(b"x" * 4096)
    code = (
        "import sys\n"
        "from scmt_cli.transports.base import open_source\n"
        f"open_source('file://{img}').close()\n"
        "print(sorted(m for m in sys.modules if m.startswith(('scmt_cli.transports.nbd', 'scmt_cli.agent', 'zstandard'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_every_builtin_scheme_is_known_to_the_registry():
    from scmt_cli.transports.base import BUILTIN_SCHEMES, registered

    assert set(BUILTIN_SCHEMES) <= set(registered())
