"""Paths shared by the workbench tests."""
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
APP = str(REPO / "workbench" / "app.py")
