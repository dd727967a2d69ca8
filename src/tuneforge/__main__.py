import sys

from tuneforge.cli.app import main

sys.exit(main())
