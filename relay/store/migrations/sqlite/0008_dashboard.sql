-- Dashboard: a message's Subject (search), and counters kept as events are written, so the
-- overview, a campaign's hours, its destination domains, bounce reasons and mail clients are read
-- from a few hundred rows instead of millions of events.
--
-- "first" counts the events that were the first of their delivery and type among deferred events
-- and human/proxy opens and clicks (lowest event id): summed over a window it is the number of
-- recipients whose first such event falls in that window.

ALTER TABLE messages ADD COLUMN subject TEXT NOT NULL DEFAULT '';
CREATE INDEX messages_subject ON messages (subject);
-- the queue page: deferred and held deliveries without reading every delivery
CREATE INDEX deliveries_waiting ON deliveries (id) WHERE state IN ('deferred', 'held');

-- all mail, per hour (Unix seconds / 3600), event type and source
CREATE TABLE hourly_events (
    hour   INTEGER NOT NULL,
    type   TEXT    NOT NULL,
    source TEXT    NOT NULL,
    n      INTEGER NOT NULL,
    first  INTEGER NOT NULL,
    PRIMARY KEY (hour, type, source)
) WITHOUT ROWID;

-- the same per campaign ('' = mail sent without one)
CREATE TABLE campaign_hourly_events (
    campaign TEXT    NOT NULL,
    hour     INTEGER NOT NULL,
    type     TEXT    NOT NULL,
    source   TEXT    NOT NULL,
    n        INTEGER NOT NULL,
    first    INTEGER NOT NULL,
    PRIMARY KEY (campaign, hour, type, source)
) WITHOUT ROWID;

-- per campaign: facet 'domain' (value = recipient domain, kind = delivered | deferred (first
-- deferral) | bounced | expired), 'reason' (value = bounce reason, kind = hard | soft), and for
-- human and proxy opens and clicks 'client', 'os', 'device' (kind = open | click); clicks
-- 'link' (value = URL, kind = engaged | scanner | privacy | honeypot: hits) and 'link_unique'
-- (the same keys: deliveries)
CREATE TABLE campaign_facets (
    campaign TEXT    NOT NULL,
    facet    TEXT    NOT NULL,
    value    TEXT    NOT NULL,
    kind     TEXT    NOT NULL,
    n        INTEGER NOT NULL,
    PRIMARY KEY (campaign, facet, value, kind)
) WITHOUT ROWID;

-- backfill from the events already stored (clients are attributed from now on)
CREATE TEMP TABLE first_events (id INTEGER PRIMARY KEY);
INSERT INTO first_events (id)
    SELECT min(id) FROM events
    WHERE delivery_id IS NOT NULL
      AND (type = 'deferred' OR (type IN ('open', 'click') AND source IN ('human', 'proxy')))
    GROUP BY delivery_id, type;

INSERT INTO hourly_events (hour, type, source, n, first)
    SELECT CAST(e.at / 3600 AS INTEGER), e.type, e.source, count(*), count(f.id)
    FROM events e LEFT JOIN first_events f ON f.id = e.id
    GROUP BY 1, 2, 3;

INSERT INTO campaign_hourly_events (campaign, hour, type, source, n, first)
    SELECT e.campaign, CAST(e.at / 3600 AS INTEGER), e.type, e.source, count(*), count(f.id)
    FROM events e LEFT JOIN first_events f ON f.id = e.id
    GROUP BY 1, 2, 3, 4;

INSERT INTO campaign_facets (campaign, facet, value, kind, n)
    SELECT e.campaign, 'domain', lower(substr(e.recipient, instr(e.recipient, '@') + 1)), e.type,
           count(*)
    FROM events e LEFT JOIN first_events f ON f.id = e.id
    WHERE e.type IN ('delivered', 'bounced', 'expired')
       OR (e.type = 'deferred' AND f.id IS NOT NULL)
    GROUP BY 1, 3, 4;

INSERT INTO campaign_facets (campaign, facet, value, kind, n)
    SELECT campaign, 'reason', coalesce(json_extract(CASE WHEN json_valid(details) THEN details END, '$.reason'), ''),
           coalesce(json_extract(CASE WHEN json_valid(details) THEN details END, '$.bounce_type'), ''), count(*)
    FROM events WHERE type = 'bounced'
    GROUP BY 1, 3, 4;

INSERT INTO campaign_facets (campaign, facet, value, kind, n)
    SELECT campaign, 'link', url, grp, count(*) FROM (
        SELECT campaign, delivery_id,
            CASE WHEN json_extract(CASE WHEN json_valid(details) THEN details END, '$.link') = 65535 THEN ''
                 ELSE coalesce(json_extract(CASE WHEN json_valid(details) THEN details END, '$.url'), '') END AS url,
            CASE WHEN json_extract(CASE WHEN json_valid(details) THEN details END, '$.link') = 65535 THEN 'honeypot'
                 WHEN source IN ('human', 'proxy') THEN 'engaged' ELSE source END AS grp
        FROM events WHERE type = 'click')
    GROUP BY 1, 3, 4;

INSERT INTO campaign_facets (campaign, facet, value, kind, n)
    SELECT campaign, 'link_unique', url, grp, count(DISTINCT delivery_id) FROM (
        SELECT campaign, delivery_id,
            CASE WHEN json_extract(CASE WHEN json_valid(details) THEN details END, '$.link') = 65535 THEN ''
                 ELSE coalesce(json_extract(CASE WHEN json_valid(details) THEN details END, '$.url'), '') END AS url,
            CASE WHEN json_extract(CASE WHEN json_valid(details) THEN details END, '$.link') = 65535 THEN 'honeypot'
                 WHEN source IN ('human', 'proxy') THEN 'engaged' ELSE source END AS grp
        FROM events WHERE type = 'click' AND delivery_id IS NOT NULL)
    GROUP BY 1, 3, 4;

DROP TABLE temp.first_events;
