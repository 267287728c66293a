"""Modules named by TENANTRY_TASK_MODULES in the tests of task handlers from outside."""
