"""What a run tells: metrics, the progress line, the report and its merge, crash files.
Listens to sweep/'s events and reads its results; imports sweep/ and everything below."""
