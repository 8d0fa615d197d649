#!/usr/bin/env python3
"""discoro.py: the discoro scheduler for several clients (see asyncoro.discoro)."""
import sys
from asyncoro.discoro import main
sys.exit(main())
