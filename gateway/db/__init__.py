"""Persistence for API keys, tenants and usage records (SQLAlchemy 2, async)."""

from gateway.db.engine import create_engine, run_migrations, session_factory
from gateway.db.models import ApiKey, Base, Tenant, UsageRecord

__all__ = ["ApiKey", "Base", "Tenant", "UsageRecord", "create_engine", "run_migrations", "session_factory"]
