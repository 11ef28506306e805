import sys

from cccmr_model.cli import main

sys.exit(main())
