"""`collector grep`: search every collected archive of one or more outputs, without extracting
anything to disk, nested archives included. Beside the run (both sit just below the command
line): it reads what a run wrote, through the destinations and the selection language, and
never imports the run, the sweep or the API client."""
