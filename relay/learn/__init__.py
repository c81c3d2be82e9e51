"""Learn: bounce and complaint reports become events and suppression updates (both processes)."""
