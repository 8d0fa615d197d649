#!/usr/bin/env python3
"""httpd.py: web monitor of a discoro.py scheduler's computation (see asyncoro.httpd)."""
import sys
from asyncoro.httpd import main
sys.exit(main())
