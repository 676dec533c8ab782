"""What the user asked for: settings, the inventory, selection, shards, server names. Loaded
before the event loop starts; imports only the leaves (errors, text)."""
