-- Leases name their holder (the relay's node name), so several relays can share a store: a node
-- takes back its own leases when it restarts and takes over another's only once they expired.
-- NULL: a lease taken before this version (its holder is gone; recovered at the next start).
ALTER TABLE deliveries ADD COLUMN lease_owner TEXT;
