"""kiln e2e fixture app: prints what tests/engine.rs looks for."""

import os
import sys
from pathlib import Path

import numpy
import six

greeting = (Path(__file__).parent / "greeting.txt").read_text().strip()
print(
    f"{greeting}; variant {os.environ.get('KILN_E2E_VARIANT')}; "
    f"numpy {numpy.__version__}; six {six.__version__}; "
    f"python {sys.version_info[0]}.{sys.version_info[1]}; prefix {sys.prefix}"
)
