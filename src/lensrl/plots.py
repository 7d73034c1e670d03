"""`lensrl plot`: one PNG of run curves. TO BE IMPLEMENTED (see the brief)."""

from __future__ import annotations
