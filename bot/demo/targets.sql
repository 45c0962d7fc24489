-- Demo target database for sentry-remediation-bot: stuck rows for each seed incident,
-- with the ids the bundled replay (bot/demo/seed_incidents.json) carries, so
-- `sentry-bot demo` previews real rows. The shipped playbooks name four targets
-- (jobs_db, platform_db, torrentflow_db, api_db); for the demo they can all be this one:
--
--   createdb demo_targets && psql demo_targets -f examples/targets.sql
--   for t in JOBS_DB PLATFORM_DB TORRENTFLOW_DB API_DB; do
--     export BOT_TARGET_${t}_URL=postgresql://postgres@127.0.0.1/demo_targets; done
--
-- Idempotent: drops and recreates its own tables, so re-running resets the demo.
--
-- Seed 001 (an advisory lock left held by an idle pooled connection) cannot be staged
-- by a SQL file: the lock belongs to a live session that must stay open and idle.
-- To stage it by hand, keep a second psql open on this database and run
--   SELECT pg_try_advisory_lock(20260417);
-- as a non-superuser role, then leave that session idle.

BEGIN;

DROP TABLE IF EXISTS tasks;
DROP TABLE IF EXISTS jobs;
DROP TABLE IF EXISTS workers;
DROP TABLE IF EXISTS resource_backups;
DROP TABLE IF EXISTS tf_jobs;
DROP TABLE IF EXISTS tf_agents;
DROP TABLE IF EXISTS compliance_hash_state;
DROP TABLE IF EXISTS job_rate_limits;

CREATE TABLE workers (
    id             text PRIMARY KEY,
    last_heartbeat timestamptz NOT NULL
);

CREATE TABLE jobs (
    id         uuid PRIMARY KEY,
    name       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- No foreign key to jobs on purpose: seed 000 BLUE-BANDED-BEE-3Y is exactly the
-- production schema that let a job row vanish under running tasks.
CREATE TABLE tasks (
    id             bigserial PRIMARY KEY,
    job_id         uuid NOT NULL,
    status         text NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed')),
    worker_id      text,
    requeue_count  integer NOT NULL DEFAULT 0,
    failure_reason text,
    started_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tasks_status_idx ON tasks (status);

-- Seed 004: started_at is NOT NULL (api migration 031_backups.sql), and failures carry
-- a bucket the customer email is chosen from.
CREATE TABLE resource_backups (
    id              uuid PRIMARY KEY,
    resource_id     uuid NOT NULL,
    resource_type   text NOT NULL,
    status          text NOT NULL,
    fail_reason     text,
    internal_detail text,
    started_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);

INSERT INTO workers (id, last_heartbeat) VALUES
    ('worker-a', now()),                               -- alive
    ('worker-3f7e21', now() - interval '45 minutes'); -- dead: heartbeat long past 2 x lease

-- Job 0bf5a3fc-… (BLUE-BANDED-BEE-42 and -3Y) is NOT here: seed 000 says its row was
-- removed while its tasks were still running. Both playbooks touch its tasks; their
-- compare-and-set UPDATEs converge whichever runs first (requeued rows of a removed job
-- are then failed with job_removed).
INSERT INTO jobs (id, name) VALUES
    ('7d9e2c41-5b3a-4f1e-8c6d-2a4b6c8d0e12', 'crawl example.net');

INSERT INTO tasks (job_id, status, worker_id, requeue_count, started_at, updated_at) VALUES
    -- Seed 000 BLUE-BANDED-BEE-42: running forever, its worker is dead.
    ('0bf5a3fc-4cae-4d4b-9c59-4b5b3a0f1e2d', 'running', 'worker-3f7e21', 0,
     now() - interval '3 hours', now() - interval '3 hours'),
    -- ...and one whose worker row is gone entirely.
    ('0bf5a3fc-4cae-4d4b-9c59-4b5b3a0f1e2d', 'running', 'worker-x', 1,
     now() - interval '2 hours', now() - interval '2 hours'),
    -- Past the requeue cap (3): dead-lettered, not requeued again.
    ('0bf5a3fc-4cae-4d4b-9c59-4b5b3a0f1e2d', 'running', 'worker-3f7e21', 3,
     now() - interval '2 hours', now() - interval '2 hours'),
    -- Seed 000 BLUE-BANDED-BEE-3Y: still pending although its job is gone.
    ('0bf5a3fc-4cae-4d4b-9c59-4b5b3a0f1e2d', 'pending', NULL, 0,
     now() - interval '1 hour', now() - interval '1 hour'),
    -- Healthy: running on a live worker; must not be touched.
    ('7d9e2c41-5b3a-4f1e-8c6d-2a4b6c8d0e12', 'running', 'worker-a', 0, now(), now()),
    ('7d9e2c41-5b3a-4f1e-8c6d-2a4b6c8d0e12', 'done', 'worker-3f7e21', 0,
     now() - interval '1 day', now() - interval '1 day');

-- Seed 003 (TorrentFlow RB-02): jobs held by a compute agent whose heartbeat went silent.
CREATE TABLE tf_agents (
    id             text PRIMARY KEY,
    last_heartbeat timestamptz NOT NULL
);
CREATE TABLE tf_jobs (
    id            bigserial PRIMARY KEY,
    status        text NOT NULL
                  CHECK (status IN ('queued', 'submitted', 'running', 'uploading', 'done', 'failed')),
    worker_id     text,
    requeue_count integer NOT NULL DEFAULT 0,
    error         text,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
INSERT INTO tf_agents (id, last_heartbeat) VALUES
    ('torrentflow-agent-5d9c8b7f6-q4wz2', now() - interval '5 minutes'),  -- offline
    ('torrentflow-agent-5d9c8b7f6-h8k2m', now());                         -- online
INSERT INTO tf_jobs (status, worker_id, updated_at) VALUES
    ('submitted', 'torrentflow-agent-5d9c8b7f6-q4wz2', now() - interval '12 minutes'),
    ('submitted', 'torrentflow-agent-5d9c8b7f6-q4wz2', now() - interval '11 minutes'),
    ('running',   'torrentflow-agent-5d9c8b7f6-q4wz2', now() - interval '10 minutes'),
    ('running',   'torrentflow-agent-5d9c8b7f6-h8k2m', now());

INSERT INTO resource_backups
    (id, resource_id, resource_type, status, fail_reason, internal_detail, started_at,
     finished_at)
VALUES
    -- Seed 004 bug 1: stuck running past the timeout; recovery must not NULL started_at.
    ('5e0c6b1a-2d3f-4a5b-8c7d-9e0f1a2b3c4d', '587afeb2-1c2d-4e3f-a4b5-c6d7e8c8528c',
     'postgres', 'running', NULL, NULL, now() - interval '2 hours', NULL),
    -- Seed 004 bug 2: credential failures bucketed as transient 'dump'.
    ('3feeaab1-280e-469d-af3b-c88940891d22', '587afeb2-1c2d-4e3f-a4b5-c6d7e8c8528c',
     'mongodb', 'failed', 'dump',
     'mongodump: error connecting to host: connection() error occurred during connection '
     'handshake: auth error: sasl conversation error: unable to authenticate using '
     'mechanism "SCRAM-SHA-256": (AuthenticationFailed) Authentication failed. '
     'socket was unexpectedly closed: EOF',
     now() - interval '30 minutes', now() - interval '30 minutes' + interval '760 ms'),
    ('8a7b6c5d-4e3f-4a1b-9c8d-7e6f5a4b3c2d', '1b2c3d4e-5f6a-4b7c-8d9e-0f1a2b3c4d5e',
     'redis', 'failed', 'dump',
     'redis-cli --rdb: AUTH failed: WRONGPASS invalid username-password pair or user is '
     'disabled.',
     now() - interval '20 minutes', now() - interval '20 minutes'),
    -- A genuinely transient failure: stays in 'dump'.
    ('9b8c7d6e-5f4a-4b3c-8d2e-1f0a9b8c7d6e', '1b2c3d4e-5f6a-4b7c-8d9e-0f1a2b3c4d5e',
     'redis', 'failed', 'dump',
     'dial tcp 10.0.0.7:6379: connect: connection refused',
     now() - interval '10 minutes', now() - interval '10 minutes');

-- Seed 001 (migration 0047): the integrity-hash worker's queue. The advisory-lock
-- playbook's post-deploy check "compliance_hash_state = 'pending' count drains" reads it;
-- nothing is pending once the worker runs again (it was 0 pending after the hotfix).
CREATE TABLE compliance_hash_state (
    id     bigserial PRIMARY KEY,
    status text NOT NULL CHECK (status IN ('pending', 'complete', 'failed'))
);
INSERT INTO compliance_hash_state (status) SELECT 'complete' FROM generate_series(1, 20);

-- Seed 000 BEE-7G backpressure: the crawler's per-job-type rate limits. The mitigation
-- playbook lowers page_discovery while the stuck-task incident is active, then puts the
-- old value back.
CREATE TABLE job_rate_limits (
    job_type       text PRIMARY KEY,
    max_per_minute integer NOT NULL CHECK (max_per_minute > 0),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
INSERT INTO job_rate_limits (job_type, max_per_minute) VALUES
    ('page_discovery', 120),
    ('page_fetch', 600);

COMMIT;
