-- The control database: global reference data, read on the hot path (cached),
-- never written there.

CREATE TABLE tenant (
    tenant_id   text PRIMARY KEY CHECK (tenant_id ~ '^[a-z0-9][a-z0-9-]{0,31}$'),
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Exclusive leases of ID worker numbers (sharding/worker_lease.py).
CREATE TABLE id_worker_lease (
    worker      smallint PRIMARY KEY CHECK (worker BETWEEN 0 AND 127),
    holder      text,
    expires_at  timestamptz NOT NULL DEFAULT '-infinity'
);
INSERT INTO id_worker_lease (worker) SELECT generate_series(0, 127);

-- The one business clock (engine/clock.py). Advanced by the day-end batch;
-- settable by hand only where ENGINE_ENV=dev.
CREATE TABLE business_clock (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    business_date  date NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
INSERT INTO business_clock (business_date) VALUES ((now() AT TIME ZONE 'Asia/Shanghai')::date);
