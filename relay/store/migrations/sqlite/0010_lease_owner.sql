-- Leases name their holder (the relay's node name): a node takes back its own leases when it
-- restarts, and a live node takes over another's only once they expired (lease_time, renewed
-- while an attempt runs). NULL: a lease taken before this version (recovered at the next start).
ALTER TABLE deliveries ADD COLUMN lease_owner TEXT;
