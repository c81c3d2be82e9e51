-- Whether a delivery already has a counted first open / click / deferral, and whether a click's
-- link was clicked before, are asked of every tracking batch. Answered by reading every earlier
-- event of the delivery, their cost grew with its history (a scanner hammering one link made
-- every later batch slower); these partial indexes answer each question with one probe. The
-- expressions are the store's link key (_LINK_URL, _LINK_GROUP in postgres.py), written the
-- same way so the planner matches them (a test checks the plan).

CREATE INDEX IF NOT EXISTS events_firsts ON events (delivery_id, type)
    WHERE type = 'deferred' OR (type IN ('open', 'click') AND source IN ('human', 'proxy'));

CREATE INDEX IF NOT EXISTS events_click_links ON events (
    delivery_id,
    (CASE WHEN details->'link' = '65535'::jsonb THEN ''
          ELSE coalesce(details->>'url', '') END),
    (CASE WHEN details->'link' = '65535'::jsonb THEN 'honeypot'
          WHEN source IN ('human', 'proxy') THEN 'engaged' ELSE source END)
) WHERE type = 'click';
