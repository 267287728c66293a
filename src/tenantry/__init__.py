"""Tenantry: a multi-tenant SaaS API foundation."""

__version__ = "0.1.0"
