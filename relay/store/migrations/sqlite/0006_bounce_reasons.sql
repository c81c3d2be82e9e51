-- Bounce reasons take Sisimai's published names (relay/learn/bounce/reasons.py, RENAMED):
-- moved -> hasmoved, suspended -> suspend, toolarge -> mesgtoobig, policy -> policyviolation,
-- ratelimited -> speeding. Recorded bounce, deferral and expiry events and the detail of
-- bounce suppressions move forward; nothing else changes (a stored hard/soft verdict is history).
UPDATE events
   SET details = json_set(details, '$.reason',
       CASE json_extract(details, '$.reason')
           WHEN 'moved' THEN 'hasmoved'
           WHEN 'suspended' THEN 'suspend'
           WHEN 'toolarge' THEN 'mesgtoobig'
           WHEN 'policy' THEN 'policyviolation'
           WHEN 'ratelimited' THEN 'speeding'
       END)
 WHERE type IN ('bounced', 'deferred', 'expired')
   AND json_valid(details)
   AND json_extract(details, '$.reason') IN ('moved', 'suspended', 'toolarge', 'policy', 'ratelimited');

UPDATE suppressions
   SET detail = CASE detail
           WHEN 'moved' THEN 'hasmoved'
           WHEN 'suspended' THEN 'suspend'
           WHEN 'toolarge' THEN 'mesgtoobig'
           WHEN 'policy' THEN 'policyviolation'
           WHEN 'ratelimited' THEN 'speeding'
       END
 WHERE reason IN ('hard-bounce', 'soft-bounce')
   AND detail IN ('moved', 'suspended', 'toolarge', 'policy', 'ratelimited');
