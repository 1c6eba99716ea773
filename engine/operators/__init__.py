"""Operators: accounts, passwords, sessions, roles and permissions, the audit trail."""
