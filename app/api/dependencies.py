"""FastAPI dependencies, declared once as Annotated aliases."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends

from app.application.runner import Platform, open_platform
from app.infrastructure.settings import Settings, get_settings


def platform(settings: Annotated[Settings, Depends(get_settings)]) -> Iterator[Platform]:
    """The platform for this request's settings; tests override `get_settings`."""
    with open_platform(settings) as opened:
        yield opened


SettingsDep = Annotated[Settings, Depends(get_settings)]
PlatformDep = Annotated[Platform, Depends(platform)]
