"""What the user asked for: settings, the inventory, selection, shards, server names; loaded
and checked before the event loop starts. Imports auth/ (an inventory's credentials are
resolved into a provider), net/ and control/ (settings build their policies), the leaves."""
