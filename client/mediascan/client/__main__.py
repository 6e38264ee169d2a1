"""`python -m mediascan.client`: the `mediascan` command line."""

import sys

from mediascan.client.cli import main

if __name__ == "__main__":
    sys.exit(main())
