-- The access log partitioned by time (PostgreSQL declarative partitioning),
-- so a retention period can drop old entries a partition at a time, and the
-- base each citizen's hash chain then starts from.
--
-- access_heads.base_*: the last entry retention dropped for that citizen
-- (seq, chain value, time); 0 and 32 zero bytes while nothing was dropped.
-- The vault verifies a citizen's chain from the base instead of from the
-- start (docs/vault.md, "Retention and partitions").
ALTER TABLE access_heads
    ADD COLUMN base_seq   bigint NOT NULL DEFAULT 0 CHECK (base_seq >= 0),
    ADD COLUMN base_mac   bytea  NOT NULL DEFAULT decode(repeat('00', 32), 'hex')
                                 CHECK (length(base_mac) = 32),
    ADD COLUMN base_at_ms bigint NOT NULL DEFAULT 0;

-- The same rows in a table partitioned by at_ms.  A partitioned table's
-- primary key must hold the partition key; (subject_ref, seq) stays unique
-- because an append inserts only while advancing that citizen's head from
-- seq - 1.  Rows of no partition go to the default one; the maintenance
-- below moves them into period partitions.
ALTER TABLE access_log RENAME TO access_log_before_partitioning;
ALTER INDEX access_log_pkey RENAME TO access_log_before_partitioning_pkey;
CREATE TABLE access_log (
    subject_ref  bytea NOT NULL,
    seq          bigint NOT NULL CHECK (seq > 0),
    at_ms        bigint NOT NULL,  -- Unix milliseconds, exactly as hashed
    entry        bytea NOT NULL,
    mac          bytea NOT NULL CHECK (length(mac) = 32),
    PRIMARY KEY (subject_ref, seq, at_ms)
) PARTITION BY RANGE (at_ms);
CREATE TABLE access_log_default PARTITION OF access_log DEFAULT;
INSERT INTO access_log (subject_ref, seq, at_ms, entry, mac)
    SELECT subject_ref, seq, at_ms, entry, mac FROM access_log_before_partitioning;
DROP TABLE access_log_before_partitioning;

-- The period partitions access_log_maintain made: access_log_p<start, Unix seconds>.
CREATE TABLE access_log_partitions (
    name  text PRIMARY KEY,
    lo    bigint NOT NULL,   -- from (ms, inclusive)
    hi    bigint NOT NULL    -- to (ms, exclusive)
);

-- Creates a partition of period_ms for every period the default partition
-- holds rows of and for the current period and `ahead` more (moving the rows
-- out of the default partition), then drops every partition that ends at or
-- before drop_before_ms (0: none), recording each citizen's last dropped
-- entry as the chain's base in the same transaction.  A partition whose
-- rows are not a prefix of each of their citizens' chains (an entry with a
-- lower seq elsewhere, e.g. clocks of two vault replicas apart at a period's
-- edge) is left in place and counted in `refused`: dropping it would leave a
-- gap no base can explain.
CREATE FUNCTION access_log_maintain(period_ms bigint, drop_before_ms bigint, ahead integer,
                                    OUT created integer, OUT dropped integer,
                                    OUT refused integer, OUT rows_dropped bigint)
LANGUAGE plpgsql AS $$
DECLARE
    now_ms bigint := (extract(epoch FROM clock_timestamp()) * 1000)::bigint;
    lo_ms bigint;
    part record;
    n bigint;
BEGIN
    created := 0; dropped := 0; refused := 0; rows_dropped := 0;
    IF period_ms < 1000 THEN
        RAISE EXCEPTION 'period_ms must be at least 1000';
    END IF;
    FOR lo_ms IN
        SELECT DISTINCT (at_ms / period_ms) * period_ms FROM access_log_default
        UNION
        SELECT (now_ms / period_ms + g) * period_ms FROM generate_series(0, greatest(ahead, 0)) g
        ORDER BY 1
    LOOP
        CONTINUE WHEN EXISTS (SELECT FROM access_log_partitions
                              WHERE lo < lo_ms + period_ms AND hi > lo_ms);
        EXECUTE format('CREATE TABLE %I (LIKE access_log INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                       'access_log_p' || (lo_ms / 1000));
        EXECUTE format('INSERT INTO %I SELECT * FROM access_log_default WHERE at_ms >= $1 AND at_ms < $2',
                       'access_log_p' || (lo_ms / 1000)) USING lo_ms, lo_ms + period_ms;
        DELETE FROM access_log_default WHERE at_ms >= lo_ms AND at_ms < lo_ms + period_ms;
        EXECUTE format('ALTER TABLE access_log ATTACH PARTITION %I FOR VALUES FROM (%s) TO (%s)',
                       'access_log_p' || (lo_ms / 1000), lo_ms, lo_ms + period_ms);
        INSERT INTO access_log_partitions VALUES ('access_log_p' || (lo_ms / 1000), lo_ms,
                                                  lo_ms + period_ms);
        created := created + 1;
    END LOOP;
    IF drop_before_ms <= 0 THEN
        RETURN;
    END IF;
    FOR part IN SELECT name FROM access_log_partitions WHERE hi <= drop_before_ms ORDER BY lo LOOP
        EXECUTE format('SELECT count(*) FROM (SELECT subject_ref, max(seq) AS m FROM %I '
                       'GROUP BY subject_ref) d JOIN access_log l ON l.subject_ref = d.subject_ref '
                       'AND l.seq < d.m AND l.tableoid <> %L::regclass', part.name, part.name)
            INTO n;
        IF n > 0 THEN
            refused := refused + 1;
            CONTINUE;
        END IF;
        EXECUTE format('UPDATE access_heads h SET base_seq = d.seq, base_mac = d.mac, '
                       'base_at_ms = d.at_ms FROM (SELECT DISTINCT ON (subject_ref) subject_ref, '
                       'seq, mac, at_ms FROM %I ORDER BY subject_ref, seq DESC) d '
                       'WHERE h.subject_ref = d.subject_ref', part.name);
        EXECUTE format('SELECT count(*) FROM %I', part.name) INTO n;
        EXECUTE format('ALTER TABLE access_log DETACH PARTITION %I', part.name);
        EXECUTE format('DROP TABLE %I', part.name);
        DELETE FROM access_log_partitions WHERE name = part.name;
        dropped := dropped + 1;
        rows_dropped := rows_dropped + n;
    END LOOP;
END
$$;
