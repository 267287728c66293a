"""A tenant's erasure on the cluster: every row of every table and every object goes, table by
table, and nothing of another tenant, nor of an upload that was under way (the rest of
tests/integration/test_erasure.py is about who may ask and what stops, which the cluster does
not change)."""

from tests.integration.test_erasure import (  # noqa: F401 - a fixture the tests take
    container,
    test_an_upload_under_way_when_its_tenant_is_erased_stores_nothing,
    test_every_row_and_object_of_the_tenant_goes_and_nothing_of_the_other,
    test_the_worker_job_erases_and_logs_its_counts,
)
