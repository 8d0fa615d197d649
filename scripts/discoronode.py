#!/usr/bin/env python3
"""discoronode.py: run discoro servers on this node (see asyncoro.discoronode)."""
import sys
from asyncoro.discoronode import main
sys.exit(main())
