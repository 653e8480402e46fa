"""Imported by the tests of forked rank processes: remembers which process imported it."""

import os

IMPORTED_IN = os.getpid()
